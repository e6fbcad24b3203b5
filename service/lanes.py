"""Where a forward view's work runs: the views' own threads, or the yielding lane for views beyond their key's share.

The views' threads are a pool of their own (`Lanes.views`), handed work with the event loop's executor call rather
than through anyio's thread pool, whose capacity limiter and backend lookups run on the event loop on every hop.
Admission lets in no more views at once than it has threads; one more would wait in its queue, counted as queue time.

Admission (`service.admission`) keeps each key to its share of the forward runs while other keys have views in
flight, but the runs it lets go at once share the cores evenly: a key that sends one request at a time still
sees its forward slowed by the flood's run beside it. A view let in beyond its key's share (`Admission.enter`
sets `beyond_share`) therefore runs on a thread of the yielding lane, whose threads run at a lower CPU priority
(`forward_beyond_share_nice`): while another key's run needs the cores, the scheduler gives them to it, and the
flood gets what is left, which, with no other key active, is all of it. Its batches form apart from the other
views' (`models.batching.in_lane`), so another key's request never rides on a lowered thread.

Linux only: there a thread's niceness is its own (`setpriority` on its thread id). Elsewhere no lane is made and
every view runs on the views' threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

from models.batching import in_lane

log = logging.getLogger("convscope")
T = TypeVar("T")
LANE = "beyond_share"  # the batches of the yielding lane


def yielding_lane(nice: int, threads: int) -> Executor | None:
    """A pool of up to `threads` threads, each of niceness `nice` from its start; None when `nice` is 0 or the
    platform gives no thread a niceness of its own."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return None
    return ThreadPoolExecutor(threads, thread_name_prefix="beyond-share", initializer=_lower, initargs=(nice,))


def _lower(nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:  # refused (a sandbox's seccomp): the thread runs at the API's priority, the view still runs
        log.warning("a thread of the yielding lane could not lower its priority", exc_info=True)


class Lanes:
    """The threads forward views run on: `views` at the API's priority, and the yielding lane (`beyond`, None when
    there is none) of niceness `nice`; `threads` each."""

    def __init__(self, threads: int, nice: int):
        self.views = ThreadPoolExecutor(threads, thread_name_prefix="views")
        self.beyond = yielding_lane(nice, threads)

    async def run(self, work: Callable[[], T], yields: bool) -> T:
        """`work()` off the event loop, in the request's context: on the yielding lane when the view `yields` and
        there is one, else on the views' threads. The caller waits for the work to end even when cancelled, so the
        view's place in admission is not handed on while its work still runs."""
        if self.beyond is not None and yields:
            pool, call = self.beyond, functools.partial(_in_lane, work)
        else:
            pool, call = self.views, work
        future = asyncio.get_running_loop().run_in_executor(pool, contextvars.copy_context().run, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    def close(self) -> None:
        for pool in (self.views, self.beyond):
            if pool is not None:
                pool.shutdown(wait=False)


def _in_lane(work: Callable[[], T]) -> T:
    with in_lane(LANE):
        return work()
