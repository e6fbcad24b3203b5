"""Dynamic batching of forward passes: requests for the same session that arrive together run as one batch.

Like Triton's dynamic batcher: each request puts its rows (one image, or a chunk of occlusion copies) in the
queue of its session and output names, and whichever waiting request finds the queue idle runs the next batch
for everyone in it: the oldest requests first, up to `max_rows` rows (a request is never split; one larger
than `max_rows` runs alone). While a batch runs, the requests that arrive queue up and go together in the next
one, so batches form by themselves under load and a lone request waits for nothing. `max_wait_s` (default 0)
additionally holds a batch that is not full, at most that long after its oldest request arrived.

At most `instances` batches run at once in the whole process, whatever their sessions; a leader takes a run
slot before it forms its batch, so whatever arrives while it waits for one joins. On a CPU, the intra-op
threads of ONNX Runtime runs side by side would otherwise outnumber the cores, and a parallel loop with a
descheduled thread stalls every op after it.

The rows of a batch are concatenated along the first axis, run with one `session.run`, and split back;
ONNX Runtime computes each image of a batch alone (convolutions loop over the batch), so every request
gets the numbers it would get alone. Requests in one batch that pass the very same array (the API's input
cache hands every request for one image and model the same read-only tensor) are computed once.
An error in a batch run is raised in every request of it. Each request's wait from its arrival until the batch
that carries it starts to run is reported to `core.timing` (its `Server-Timing` queue, not its forward).
No thread of its own: the batch runs on the thread of one of the requests waiting for it. While a batch runs with
no other batch running, no request waiting or on its way (`coming`) and no other thread runnable on the machine
(`runnable_elsewhere`), `running_alone()` is true on its thread: a session may then run in ways that are faster
alone but would take cores from anything beside it (`models.runtimes.Twins`). That is read before the run starts
(and before its time limit's watchdog thread is woken).
Requests batch only with requests of their own lane (`in_lane`): threads of a lower CPU priority keep their runs
to themselves, so that a request of another lane never waits on one of them.
"""

from __future__ import annotations

import contextvars
import functools
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from core import timing

_ALONE: contextvars.ContextVar[bool] = contextvars.ContextVar("batch_runs_alone", default=False)
_LANE: contextvars.ContextVar[str] = contextvars.ContextVar("batch_lane", default="")


@contextmanager
def in_lane(name: str) -> Iterator[None]:
    """Requests made inside batch only with requests of lane `name` (see the module's docstring)."""
    token = _LANE.set(name)
    try:
        yield
    finally:
        _LANE.reset(token)


def running_alone() -> bool:
    """Whether the batch being run on this thread started alone: no other batch running, no request waiting or
    coming, and no other thread runnable on the machine."""
    return _ALONE.get()


def runnable_elsewhere() -> int | None:
    """Threads runnable on this machine at this moment besides the caller and the process's main thread (the
    API's event loop, whose work between two awaits is short); None where that is not known. Linux: the fourth
    field of /proc/loadavg counts runnable threads, the reader included (a container may see its host's), and
    /proc/self/stat gives the main thread's state. Read before every lone run, so through files kept open
    (`_proc_files`): a read at offset 0 makes their text anew, without the open and close each time."""
    try:
        loadavg, stat = _proc_files(os.getpid())
        runnable = int(os.pread(loadavg, 128, 0).split()[3].split(b"/")[0]) - 1
        if threading.current_thread() is not threading.main_thread():
            runnable -= os.pread(stat, 1024, 0).rpartition(b")")[2].split()[0] == b"R"
        return runnable
    except (OSError, ValueError, IndexError):
        return None


@functools.cache
def _proc_files(pid: int) -> tuple[int, int]:
    """/proc/loadavg and this process's /proc/<pid>/stat, open for reading; by pid, so that a forked child
    opens its own (the parent's /proc/self names the parent)."""
    return os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC), os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)


@dataclass
class _Request:
    x: np.ndarray
    arrived: float
    wake: threading.Event = field(default_factory=threading.Event)  # set when done, or when it is to run the batch
    leads: bool = False
    done: bool = False
    ran: float = 0.0  # when the batch that carried it began to run (time.monotonic)
    result: list | None = None
    error: BaseException | None = None


@dataclass
class _Queue:
    max_rows: int
    waiting: deque = field(default_factory=deque)
    running: int = 0  # requests that lead (hold, take or run) a batch, at most `instances`
    holding: bool = False  # the leader waits for more rows (`max_wait_s`)


@dataclass
class BatchFigures:
    """Batches run and the rows (images) they held, for /metrics and the benchmarks."""

    batches: int = 0
    rows: int = 0
    requests: int = 0


class DynamicBatcher:
    """Runs `session.run(outputs, {input: x})` for many threads, batching calls that share a key.

    The oldest waiting request leads: it takes the batch (itself first), runs it, wakes the requests it
    answered and hands the lead to the next oldest, if any; no other thread is woken. Up to `instances`
    batches of one key run at once (like Triton's instance count: on a CPU, where a batch costs about
    its images one by one, the cores run batches side by side); `instances` also bounds the batches running
    at once over all keys."""

    def __init__(self, max_rows: int, max_wait_s: float = 0.0, instances: int = 1,
                 coming: Callable[[], int] | None = None):
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.instances = max(1, instances)
        self.coming = coming  # requests on their way here, the caller's included (the API: forward views admitted)
        self._queues: dict[Hashable, _Queue] = {}
        self._cond = threading.Condition()
        self._slots = threading.Semaphore(self.instances)  # batches running at once, over every key
        self._running = 0  # batches taken and not yet done, over every key
        self.figures = BatchFigures()

    def run(self, key: Hashable, session, outputs: list[str], input_name: str, x: np.ndarray,
            max_rows: int | None = None) -> list[np.ndarray]:
        """The session's `outputs` for the rows of `x`, as `session.run` returns them; `key` names the session
        and outputs (calls with the same key and row shape may share a batch); `max_rows` caps that session's
        batches below the batcher's own cap (what `best_batch` found cheapest per image)."""
        key = (key, tuple(outputs), input_name, x.shape[1:], x.dtype.str, _LANE.get())
        mine = _Request(x, time.monotonic())
        with self._cond:
            queue = self._queues.setdefault(key, _Queue(min(self.max_rows, max_rows or self.max_rows)))
            queue.waiting.append(mine)
            if queue.running < self.instances and len(queue.waiting) == 1:
                queue.running += 1
                mine.leads = True
            elif queue.holding:
                self._cond.notify_all()  # the leader holding its batch open may take this one
        if not mine.leads:
            mine.wake.wait()
        if not mine.done:  # it leads: the oldest waiting, so its batch holds it
            batch: list[_Request] = []
            counted = False
            self._slots.acquire()
            try:
                with self._cond:
                    batch = self._take(queue)
                    spare = self._next_leader(queue)
                    alone = (not self._running and not any(q.waiting for q in self._queues.values())
                             and (self.coming is None or self.coming() <= 1))
                    self._running += 1
                    counted = True
                if spare is not None:
                    spare.wake.set()
                alone = alone and not runnable_elsewhere()  # read outside the lock
                self._run(batch, session, outputs, input_name, alone)
            finally:
                self._slots.release()
                with self._cond:
                    self._running -= counted
                    self.figures.batches += 1
                    self.figures.rows += sum(len(r.x) for r in batch)
                    self.figures.requests += len(batch)
                    heir = queue.waiting[0] if queue.waiting else None
                    if heir is not None and not heir.leads:
                        heir.leads = True
                    else:
                        heir = None
                        queue.running -= 1
                        if not queue.running and not queue.waiting and self._queues.get(key) is queue:
                            del self._queues[key]
                for request in batch:
                    request.wake.set()
                if heir is not None:
                    heir.wake.set()
        timing.wait(max(0.0, mine.ran - mine.arrived))  # the request's Server-Timing: queue, not forward
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _next_leader(self, queue: _Queue) -> _Request | None:
        """With a batch taken, the oldest request still waiting leads the next one at once when this key may run
        another batch (the caller holds the lock): otherwise, under load, where no request ever finds the queue
        empty, a key whose leader had to wait for a run slot would go on with one batch at a time."""
        if queue.waiting and queue.running < self.instances and not queue.waiting[0].leads:
            queue.waiting[0].leads = True
            queue.running += 1
            return queue.waiting[0]
        return None

    def _take(self, queue: _Queue) -> list[_Request]:
        """The next batch (the caller holds the lock): oldest first, whole requests, up to `max_rows` rows; held
        open for up to `max_wait_s` after the oldest arrived while it is not full."""
        if self.max_wait_s > 0:
            until = queue.waiting[0].arrived + self.max_wait_s
            queue.holding = True
            while sum(len(r.x) for r in queue.waiting) < queue.max_rows and (left := until - time.monotonic()) > 0:
                self._cond.wait(left)
            queue.holding = False
        batch, rows = [], 0
        while queue.waiting and (not batch or rows + len(queue.waiting[0].x) <= queue.max_rows):
            request = queue.waiting.popleft()
            batch.append(request)
            rows += len(request.x)
        return batch

    def _run(self, batch: list[_Request], session, outputs: list[str], input_name: str, alone: bool) -> None:
        ran = time.monotonic()
        for request in batch:
            request.ran = ran
        token = _ALONE.set(alone)
        try:
            distinct = list({id(r.x): r.x for r in batch}.values())  # the same array asked for twice: run it once
            x = distinct[0] if len(distinct) == 1 else np.concatenate(distinct)
            results = session.run(outputs, {input_name: x})
            where, start = {}, 0
            for array in distinct:
                where[id(array)] = (start, start + len(array))
                start += len(array)
            for request in batch:
                begin, end = where[id(request.x)]
                request.result = [out[begin:end] for out in results] if len(distinct) > 1 else results
        except BaseException as exc:  # every request of the batch learns of it
            for request in batch:
                request.error = exc
        finally:
            _ALONE.reset(token)
            for request in batch:
                request.done = True


def best_batch(run: Callable[[int], object], limit: int, *, rounds: int = 4, gain: float = 0.95,
               worse: float = 1.25, clock: Callable[[], float] = time.perf_counter) -> int:
    """The batch size, among 1, 2, 4, … up to `limit`, that costs least per image: `run(n)` runs a batch of n.

    The sizes are first run in turn, each once to warm it (allocations, kernel choice) and once timed, until one
    costs `worse` times the best per image so far. Then every size tried is timed `rounds` more times, round after
    round, so that a machine whose speed drifts (a shared VM) weighs on every size alike, and each size counts its
    median run, its usual cost: neither a disturbed run nor a lucky first one decides. A larger size is preferred
    only when it is at least 1 − `gain` cheaper per image (a batch also makes its requests wait for one another).
    On a GPU the cost per image falls with the batch; on a CPU it can rise, so a fixed large batch could make every
    batched run slower than running the images one by one."""
    def per_image(n: int) -> float:
        start = clock()
        run(n)
        return (clock() - start) / n

    timed: dict[int, list[float]] = {}
    size = 1
    while size <= limit:
        run(size)
        timed[size] = [per_image(size)]
        if timed[size][0] > worse * min(times[0] for times in timed.values()):
            break
        size *= 2
    for _ in range(rounds):
        for n in timed:
            timed[n].append(per_image(n))
    usual = {n: statistics.median(times) for n, times in timed.items()}
    best = 1
    for n in usual:  # ascending
        if usual[n] < usual[best] * gain:
            best = n
    return best
