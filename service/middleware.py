"""The outer request layer, as plain ASGI: request id, admission of forward views, metrics and a log line.

Forward views (`POST /v1/models/{id}/predict|activations|occlusion`) are admitted by `service.admission`: up to
`max_concurrent_requests` run at once and up to `max_queued_requests` more wait their turn, in a line per API key,
for at most `max_queue_wait_ms`. A request that finds the lines full, or whose wait runs out, gets 503 `busy` with
`Retry-After`. The requests that run together share batches (`models.batching`), so a short queue turns a burst
into throughput instead of errors.

Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which runs every request's app in a task of its
own and copies the response through a stream, a cost paid on every request.
"""

from __future__ import annotations

import logging
import os
import re
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logs, timing
from core.errors import error_body
from service.admission import Admission, key_of
from service.metrics import LATENCY, REQUESTS

log = logging.getLogger("convscope")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HEAVY = re.compile(r"^/v1/models/[^/]+/(predict|activations|occlusion)$")
# Answered with Server-Timing: the forward views, filters and circuits.
TIMED = re.compile(r"^/v1/models/[^/]+/(predict|activations|occlusion|layers/.+/(filters|units/\d+/circuit))$")


class Observe:
    """Request id (`X-Request-ID`, taken from the client when well-formed), admission of forward views, their
    `Server-Timing` (`core.timing`: the phases the view reports, admission counted as queue), the request counter
    and latency histogram, and one log line per request."""

    def __init__(self, app: ASGIApp, admission: Admission):
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if REQUEST_ID.match(incoming) else os.urandom(8).hex()
        token = logs.request_id.set(rid)
        start = time.perf_counter()
        status = 500
        header = (b"x-request-id", rid.encode())
        phases = timing.Phases() if TIMED.match(scope["path"]) else None
        timed = timing.current.set(phases)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
                if phases is not None:
                    total = time.perf_counter() - start
                    message["headers"].append((b"server-timing", phases.header(total).encode()))
            await send(message)

        heavy = scope["method"] == "POST" and HEAVY.match(scope["path"]) is not None
        if heavy:  # the body first: a slow upload holds no forward slot
            receive = await self.admission.arrived(receive)
        try:
            if not heavy:
                await self.app(scope, receive, send_with_id)
            elif await self._admitted(key := key_of(scope), phases):
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    self.admission.leave(key)
            else:
                busy = JSONResponse(error_body("busy", "too many requests in flight; retry shortly"), status_code=503,
                                    headers={"Retry-After": "1"})
                await busy(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(elapsed)
            log.info("request", extra={"fields": {"method": scope["method"], "route": route, "status": status,
                                                  "ms": round(elapsed * 1000, 1)}})
            logs.request_id.reset(token)
            timing.current.reset(timed)

    async def _admitted(self, key: str, phases: timing.Phases | None) -> bool:
        """Admission, its wait counted as the request's queue time."""
        start = time.perf_counter()
        try:
            return await self.admission.enter(key)
        finally:
            if phases is not None:
                phases.wait(time.perf_counter() - start)
