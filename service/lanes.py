"""Where a forward view's work runs: the thread pool, or the yielding lane for views beyond their key's share.

Admission (`service.admission`) keeps each key to its share of the forward runs while other keys have views in
flight, but the runs it lets go at once share the cores evenly: a key that sends one request at a time still
sees its forward slowed by the flood's run beside it. A view let in beyond its key's share (`Admission.enter`
sets `beyond_share`) therefore runs on a thread of the yielding lane, whose threads run at a lower CPU priority
(`forward_beyond_share_nice`): while another key's run needs the cores, the scheduler gives them to it, and the
flood gets what is left, which, with no other key active, is all of it. Its batches form apart from the other
views' (`models.batching.in_lane`), so another key's request never rides on a lowered thread.

Linux only: there a thread's niceness is its own (`setpriority` on its thread id). Elsewhere no lane is made and
every view runs on the thread pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool

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


async def run(work: Callable[[], T], lane: Executor | None, yields: bool) -> T:
    """`work()` off the event loop, in the request's context: on `lane` when the view `yields` and there is one,
    else on the thread pool. Like the thread pool, the caller waits for the work to end even when cancelled, so
    the view's place in admission is not handed on while its work still runs."""
    if lane is None or not yields:
        return await run_in_threadpool(work)

    def in_its_lane() -> T:
        with in_lane(LANE):
            return work()
    future = asyncio.get_running_loop().run_in_executor(lane, contextvars.copy_context().run, in_its_lane)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise
