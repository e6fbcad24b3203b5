"""The outer request layer, as plain ASGI: request id, admission of forward views, metrics and a log line.

Forward views (`POST /v1/models/{id}/predict|activations|occlusion`) are admitted by `Admission`: up to
`max_concurrent_requests` run at once and up to `max_queued_requests` more wait their turn, first come
first served, for at most `max_queue_wait_ms`. A request that finds the queue full, or whose wait runs out,
gets 503 `busy` with `Retry-After`. A request asks for its place once its body has arrived (a slow upload holds
none). Waiting is cheap (no thread), and the requests that run
together share batches (`models.batching`), so a short queue turns a burst into throughput instead of errors.

Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which runs every request's app in a task of its
own and copies the response through a stream, a cost paid on every request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import deque

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logs, timing
from core.errors import error_body
from service.metrics import LATENCY, REQUESTS

log = logging.getLogger("convscope")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HEAVY = re.compile(r"^/v1/models/[^/]+/(predict|activations|occlusion)$")
# Answered with Server-Timing: the forward views, filters and circuits.
TIMED = re.compile(r"^/v1/models/[^/]+/(predict|activations|occlusion|layers/.+/(filters|units/\d+/circuit))$")


class Admission:
    """At most `running` admitted at once, at most `queued` waiting (FIFO), each for at most `wait_s`; a request
    waits for its place only once its body has arrived (up to `body_bytes`; `arrived`)."""

    def __init__(self, running: int, queued: int, wait_s: float, body_bytes: int = 64 * 1024 * 1024):
        self.running, self.queued, self.wait_s, self.body_bytes = running, queued, wait_s, body_bytes
        self.active = 0
        self._waiting: deque[asyncio.Future] = deque()
        self.shed = 0

    async def enter(self) -> bool:
        """True when admitted (call `leave` when done); False when the request is to be shed."""
        if self.active < self.running and not self._waiting:
            self.active += 1
            return True
        if len(self._waiting) >= self.queued:
            self.shed += 1
            return False
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_s)
            return True
        except (TimeoutError, asyncio.CancelledError) as exc:
            if turn.done() and not turn.cancelled():  # admitted just as the wait ended: hand the place on
                self.leave()
            else:
                turn.cancel()
                self._waiting.remove(turn)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.shed += 1
            return False

    async def arrived(self, receive: Receive) -> Receive:
        """Read the request's body before it asks for a place, so that a client sending slowly holds none, and
        give back a `receive` that replays it. At most `body_bytes` are kept: past that the rest streams on to
        the route, which refuses the body (413) as it reads."""
        messages: list[Message] = []
        size = 0
        while size <= self.body_bytes:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay

    def leave(self) -> None:
        """A request admitted is done: its place goes to the oldest waiting one, if any."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # `active` stays: the place passes on
                return
        self.active -= 1


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
        rid = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
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
                    message["headers"].append((b"server-timing", phases.header().encode()))
            await send(message)

        heavy = scope["method"] == "POST" and HEAVY.match(scope["path"]) is not None
        if heavy:  # the body first: a slow upload holds no forward slot
            receive = await self.admission.arrived(receive)
        try:
            if not heavy:
                await self.app(scope, receive, send_with_id)
            elif await self._admitted(phases):
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    self.admission.leave()
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

    async def _admitted(self, phases: timing.Phases | None) -> bool:
        """Admission, its wait counted as the request's queue time."""
        start = time.perf_counter()
        try:
            return await self.admission.enter()
        finally:
            if phases is not None:
                phases.wait(time.perf_counter() - start)
