"""The yielding lane (`service.lanes`): forward views let in beyond their key's share run on threads of a lower CPU
priority, in the request's context, and batch only among themselves."""

from __future__ import annotations

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
    lane = lanes.yielding_lane(10, 2)
    try:
        async def both():
            ASKED.set("the request's")
            return await lanes.run(where, lane, yields=True), await lanes.run(where, lane, yields=False)
        beyond, within = run_async(both(), timeout=30)
        assert beyond == (10, lanes.LANE, "the request's")
        assert within == (base, "", "the request's")
    finally:
        lane.shutdown()


def test_no_lane_at_niceness_zero_and_then_every_view_runs_on_the_pool():
    assert lanes.yielding_lane(0, 2) is None

    async def beyond():
        return await lanes.run(where, None, yields=True)
    assert run_async(beyond(), timeout=30)[:2] == (os.getpriority(os.PRIO_PROCESS, 0), "")


def test_a_lane_whose_threads_may_not_lower_their_priority_still_runs_the_views(monkeypatch):
    def refused(*args):
        raise PermissionError("setpriority refused")
    monkeypatch.setattr(os, "setpriority", refused)
    lane = lanes.yielding_lane(10, 1)
    try:
        async def beyond():
            return await lanes.run(where, lane, yields=True)
        assert run_async(beyond(), timeout=30)[:2] == (os.getpriority(os.PRIO_PROCESS, 0), lanes.LANE)
    finally:
        lane.shutdown()
