"""Unit tests of the client's transport (429/503 retried after Retry-After, bounded) and its image arguments.

The service cannot be made to answer 429 on cue, so `send` is tested here against httpx's MockTransport;
everything else in tests/clients/ runs against the real service."""

from __future__ import annotations

import json

import httpx
import pytest
from convscope_client import ConvscopeError
from convscope_client.calls import Call, predict
from convscope_client.transport import RetryPolicy, retry_after_s, send, send_async

from tests.conftest import run_async


def answering(*responses: httpx.Response) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport giving `responses` in turn (the last one again when they run out), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return seen, httpx.MockTransport(handle)


def busy(status: int, retry_after: str | None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, json={"error": {"code": "busy", "message": "try later", "details": None}})


CALL = Call("GET", "/v1/models", lambda response: response.json())
POLICY = RetryPolicy(retries=3, max_retry_wait_s=30)


def test_429_and_503_are_sent_again_after_retry_after():
    seen, transport = answering(busy(429, "0"), busy(503, "0"), httpx.Response(200, json={"models": []}))
    with httpx.Client(transport=transport, base_url="http://convscope") as http:
        assert send(http, CALL, POLICY).json() == {"models": []}
    assert len(seen) == 3


def test_retries_are_bounded_and_end_in_the_error():
    seen, transport = answering(busy(503, "0"))
    with httpx.Client(transport=transport, base_url="http://convscope") as http, pytest.raises(ConvscopeError) as error:
        send(http, CALL, POLICY)
    assert len(seen) == 1 + POLICY.retries and (error.value.status, error.value.code) == (503, "busy")


@pytest.mark.parametrize("retry_after", [None, "3600"])
def test_no_retry_after_or_a_long_one_is_raised_at_once(retry_after):
    seen, transport = answering(busy(429, retry_after), httpx.Response(200))
    with httpx.Client(transport=transport, base_url="http://convscope") as http, pytest.raises(ConvscopeError):
        send(http, CALL, POLICY)
    assert len(seen) == 1


def test_a_multipart_body_is_sent_whole_on_every_try():
    seen, transport = answering(busy(429, "0"), httpx.Response(200, json={"predictions": []}))
    call = predict("m", b"\x89PNG not really", top_k=2)
    with httpx.Client(transport=transport, base_url="http://convscope") as http:
        send(http, call, POLICY)
    assert len(seen) == 2 and all(b"not really" in request.read() for request in seen)  # each with its own boundary


def test_the_async_transport_retries_the_same_way():
    seen, transport = answering(busy(429, "0"), httpx.Response(200, json={}))

    async def go():
        async with httpx.AsyncClient(transport=transport, base_url="http://convscope") as http:
            return (await send_async(http, CALL, POLICY)).status_code

    assert run_async(go()) == 200 and len(seen) == 2


def test_an_error_that_is_not_the_api_shape_still_raises_with_its_status():
    _, transport = answering(httpx.Response(502, text="<html>bad gateway</html>"))
    with httpx.Client(transport=transport, base_url="http://convscope") as http, pytest.raises(ConvscopeError) as error:
        send(http, CALL, POLICY)
    assert (error.value.status, error.value.code) == (502, "http_502") and "bad gateway" in error.value.message


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("5") == 5 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past: now


def test_image_references_travel_as_json_and_files_as_multipart(tmp_path):
    assert predict("m", "f" * 64).body == {"json": {"top_k": 5, "image": {"id": "f" * 64}}}
    assert predict("m", ("ds1", 3)).body["json"]["image"] == {"dataset": "ds1", "index": 3}
    assert predict("m", {"dataset": "ds1", "index": 0}).body["json"]["image"] == {"dataset": "ds1", "index": 0}
    (tmp_path / "cat.png").write_bytes(b"png bytes")
    body = predict("m", tmp_path / "cat.png", top_k=1).body
    assert body["files"]["image"][1] == b"png bytes" and json.loads(body["data"]["spec"]) == {"top_k": 1}
    with pytest.raises(TypeError):
        predict("m", 3.5)
