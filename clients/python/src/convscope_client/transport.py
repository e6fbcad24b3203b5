"""Sending a Call: the API key, 429/503 retried after `Retry-After` (bounded), error answers raised.

A 429 (queue or quota full) or 503 (busy, a dependency down) that names a `Retry-After` of at most
`max_retry_wait_s` seconds is sent again after that wait, at most `retries` times; a longer wait (a quota that
frees in an hour) or none at all is raised at once, as is every other error answer (`ConvscopeError`).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass

import httpx

from convscope_client.calls import Call
from convscope_client.errors import ConvscopeError

RETRIED = (429, 503)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    max_retry_wait_s: float = 30.0

    def wait_s(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again, or None when the answer is final."""
        if response.status_code not in RETRIED or attempt >= self.retries:
            return None
        wait = retry_after_s(response.headers.get("retry-after"))
        return wait if wait is not None and wait <= self.max_retry_wait_s else None


def retry_after_s(value: str | None) -> float | None:
    """`Retry-After` in seconds: delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def accepted(call: Call, response: httpx.Response) -> bool:
    """Whether `response` is an answer to return (a success, or a status `call` accepts) rather than an error."""
    return response.is_success or response.status_code in call.accept


def checked(call: Call, response: httpx.Response) -> httpx.Response:
    """The response, or its ConvscopeError when it is an error answer (read first when streamed; reading again
    what `send_async` has read already is a no-op)."""
    if accepted(call, response):
        return response
    response.read()
    raise ConvscopeError.from_response(response)


def request(http: httpx.Client | httpx.AsyncClient, call: Call, timeout: httpx.Timeout | None) -> httpx.Request:
    options = {"timeout": timeout} if timeout else {}
    return http.build_request(call.method, call.path, params=call.params, **options, **call.body)


def send(http: httpx.Client, call: Call, policy: RetryPolicy, stream: bool = False,
         timeout: httpx.Timeout | None = None) -> httpx.Response:
    attempt = 0
    while True:
        response = http.send(request(http, call, timeout), stream=stream)
        wait = policy.wait_s(response, attempt)
        if wait is None:
            try:
                return checked(call, response)
            except ConvscopeError:
                response.close()
                raise
        response.close()
        time.sleep(wait)
        attempt += 1


async def send_async(http: httpx.AsyncClient, call: Call, policy: RetryPolicy, stream: bool = False,
                     timeout: httpx.Timeout | None = None) -> httpx.Response:
    attempt = 0
    while True:
        response = await http.send(request(http, call, timeout), stream=stream)
        wait = policy.wait_s(response, attempt)
        if wait is None:
            if not accepted(call, response):
                await response.aread()  # for checked() to raise with the body
                await response.aclose()
            return checked(call, response)
        await response.aclose()
        await asyncio.sleep(wait)
        attempt += 1
