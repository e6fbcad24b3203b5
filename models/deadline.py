"""A time limit on ONNX Runtime runs: `RunOptions.terminate`, set by one watchdog thread when a run's time is up.

ONNX Runtime checks `terminate` between ops and ends the run with an error; the session is not harmed, and the next
run (with its own `RunOptions`) goes on as usual. One daemon thread keeps the deadlines of the runs under way in a
heap, so a run costs a heap push and pop, not a thread of its own.

Within `request()` (a forward view: its occlusion chunks, its target's prediction) the limit holds for all of the
request's runs together, counted from its first; outside one, for each run.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import math
import threading
import time
from contextlib import contextmanager

import numpy as np

from core.errors import Unavailable

RETRY_AFTER_S = 5
_REQUEST: contextvars.ContextVar[list | None] = contextvars.ContextVar("forward_deadline", default=None)


@contextmanager
def request():
    """The runs inside share one deadline: the time limit counted from the first of them."""
    token = _REQUEST.set([None])
    try:
        yield
    finally:
        _REQUEST.reset(token)


class ForwardTimeout(Unavailable):
    """503 `forward_timeout`: a forward run took longer than its limit and was stopped."""

    code = "forward_timeout"


class Watchdog:
    """Sets `terminate` on the `RunOptions` of runs past their deadline (`time.monotonic` seconds).

    The thread is woken only for a deadline earlier than the time it is already due to look (`_due`): a run's
    start does not wake it, as a woken thread takes a core from the run it watches for its first ops. When the
    last run under way ends it sleeps on until the deadline it was due to look at, and the runs that start
    meanwhile, whose deadlines come later, wake nobody."""

    def __init__(self):
        self._heap: list[tuple[float, int, object]] = []
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._due = math.inf  # when the thread next looks at the heap by itself

    @contextmanager
    def limit(self, seconds: float):
        """`RunOptions` for one run that the watchdog terminates after `seconds`."""
        import onnxruntime as ort

        options = ort.RunOptions()
        entry = (time.monotonic() + seconds, next(self._ids), options)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="forward-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, entry)
            if entry[0] < self._due:
                self._due = entry[0]
                self._cond.notify()
        try:
            yield options
        finally:
            with self._cond:
                try:
                    self._heap.remove(entry)
                    heapq.heapify(self._heap)
                except ValueError:  # the watchdog took it: the run was terminated
                    pass

    def _watch(self) -> None:
        while True:
            with self._cond:
                left = self._due - time.monotonic()
                if left > 0:
                    self._cond.wait(None if math.isinf(left) else left)
                    continue
                now = time.monotonic()
                late = []
                while self._heap and self._heap[0][0] <= now:
                    late.append(heapq.heappop(self._heap)[2])
                self._due = self._heap[0][0] if self._heap else math.inf
            for options in late:
                options.terminate = True


WATCHDOG = Watchdog()


class Limited:
    """A session whose `run` stops after `seconds` with `ForwardTimeout`; anything else it passes to the session
    (so the batcher and callers see a session)."""

    def __init__(self, session, seconds: float, watchdog: Watchdog = WATCHDOG):
        self.session, self.seconds, self.watchdog = session, seconds, watchdog

    def run(self, outputs, feeds) -> list[np.ndarray]:
        left = self.seconds
        shared = _REQUEST.get()
        if shared is not None:
            now = time.monotonic()
            shared[0] = shared[0] if shared[0] is not None else now + self.seconds
            left = shared[0] - now
            if left <= 0:
                raise self._timeout()
        with self.watchdog.limit(left) as options:
            try:
                return self.session.run(outputs, feeds, options)
            except Exception as exc:
                if not options.terminate:
                    raise
                raise self._timeout() from exc

    def _timeout(self) -> ForwardTimeout:
        return ForwardTimeout(f"the model's forward passes took longer than {self.seconds:g} s and were stopped; "
                              "a lighter model, or fewer occlusion positions, may answer in time",
                              retry_after=RETRY_AFTER_S, details={"limit_s": self.seconds})

    def __getattr__(self, name: str):
        return getattr(self.session, name)
