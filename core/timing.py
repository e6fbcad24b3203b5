"""Where a forward view's time goes on the server, sent back as its `Server-Timing` header.

W3C Server Timing (https://www.w3.org/TR/server-timing/): `queue;dur=0.1, decode;dur=2.3, forward;dur=11.9,
encode;dur=0.4`, each phase in milliseconds, so that a client or a load test can tell server time from network time
and waiting from computing:

    queue    waiting: for admission (the middleware's line), for a thread of the pool, and inside the forward for a
             run slot and for the batch that carries the request (`models.batching`)
    decode   reading the request body and making the model input (image decode, resize, normalise; about nothing on
             an input-cache hit)
    forward  ONNX Runtime runs, less the waits above (a session built or measured on the way counts here)
    encode   making the answer from the outputs: top-k, statistics, PNG, JSON or npy
    total    the request's whole time in the API, from its arrival at the outermost layer (its head read) to its
             answer's head: the phases above and what lies between them (routing, the key, the request's
             checks, the hops to a thread and back); the client's wait less `total` is the network and the
             HTTP server around the app

One request's phases are one `Phases`, reached through a context variable by whatever runs on its behalf: the
middleware sets it for the forward views, and the pool thread a view runs its work on inherits it (anyio copies the
context into the thread).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

PHASES = ("queue", "decode", "forward", "encode")


class Phases:
    """Seconds per phase of one request; waits reported from inside a timed phase count as queue, not in it."""

    __slots__ = ("seconds", "_waited")

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._waited = 0.0  # total of `wait`, so a timed phase can leave out the waits inside it

    def wait(self, seconds: float) -> None:
        """Time spent waiting (for a batch, a run slot) within whatever phase is being timed: counted as queue."""
        self.seconds["queue"] += seconds
        self._waited += seconds

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start, waited = time.perf_counter(), self._waited
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start - (self._waited - waited)

    def header(self, total_s: float | None = None) -> str:
        """The `Server-Timing` value: every phase, then `total` when given, in milliseconds to one decimal."""
        entries = [*self.seconds.items(), *([("total", total_s)] if total_s is not None else [])]
        return ", ".join(f"{phase};dur={seconds * 1000:.1f}" for phase, seconds in entries)


current: ContextVar[Phases | None] = ContextVar("convscope_phases", default=None)


@contextmanager
def timed(phase: str) -> Iterator[None]:
    """Time the block as `phase` of the current request (nothing outside a timed request)."""
    phases = current.get()
    if phases is None:
        yield
        return
    with phases.timed(phase):
        yield


def wait(seconds: float) -> None:
    """Report a wait of the current request (nothing outside a timed request)."""
    phases = current.get()
    if phases is not None:
        phases.wait(seconds)
