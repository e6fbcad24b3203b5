"""The yielding lane (`service.lanes`): forward views let in beyond their key's share run on threads of a lower CPU
priority, in the request's context, and batch only among themselves."""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading

import pytest

from models import batching
from service import lanes
from tests.conftest import run_async

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own niceness is Linux's")
ASKED: contextvars.ContextVar[str] = contextvars.ContextVar("asked", default="")


def where() -> tuple[int, str, str]:
    """The calling thread's niceness, its batching lane and the request's context variable."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), batching._LANE.get(), ASKED.get()


def test_a_view_beyond_its_share_runs_on_a_lowered_thread_in_its_own_lane_and_the_others_do_not():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base > 10:
        pytest.skip("this process already runs at a niceness above the lane's")
    threads = lanes.Lanes(2, 10)
    try:
        async def both():
            ASKED.set("the request's")
            return await threads.run(where, yields=True), await threads.run(where, yields=False)
        beyond, within = run_async(both(), timeout=30)
        assert beyond == (10, lanes.LANE, "the request's")
        assert within == (base, "", "the request's")
    finally:
        threads.close()


def test_no_lane_at_niceness_zero_and_then_every_view_runs_on_the_views_threads():
    threads = lanes.Lanes(2, 0)
    try:
        assert threads.beyond is None

        async def beyond():
            return await threads.run(where, yields=True)
        assert run_async(beyond(), timeout=30)[:2] == (os.getpriority(os.PRIO_PROCESS, 0), "")
    finally:
        threads.close()


def test_a_lane_whose_threads_may_not_lower_their_priority_still_runs_the_views(monkeypatch):
    def refused(*args):
        raise PermissionError("setpriority refused")
    monkeypatch.setattr(os, "setpriority", refused)
    threads = lanes.Lanes(1, 10)
    try:
        async def beyond():
            return await threads.run(where, yields=True)
        assert run_async(beyond(), timeout=30)[:2] == (os.getpriority(os.PRIO_PROCESS, 0), lanes.LANE)
    finally:
        threads.close()


def test_a_cancelled_view_ends_only_when_its_work_has_ended():
    """A client that goes away cancels its view, yet the view (and so its place in admission) ends only once the
    work on its thread has: otherwise the next view let in would run beside it."""
    threads = lanes.Lanes(1, 0)
    started, release = threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        release.wait(10)
        return "done"

    async def cancelled() -> bool:
        view = asyncio.ensure_future(threads.run(work, yields=False))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        view.cancel()
        await asyncio.sleep(0.2)
        ended_early = view.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await view
        return ended_early
    try:
        assert run_async(cancelled(), timeout=30) is False
    finally:
        release.set()
        threads.close()
