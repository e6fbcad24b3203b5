"""The forward runs' watchdog (`models.deadline.Watchdog`): runs past their time are terminated, and a run's start
wakes the watchdog's thread only when its deadline comes before the time the thread is already due to look."""

from __future__ import annotations

import threading
import time

from models.deadline import Watchdog
from tests.conftest import eventually


class CountingCondition(threading.Condition):
    """A condition that counts the times its waiters are woken or time out."""

    def __init__(self):
        super().__init__()
        self.wakes = 0

    def wait(self, timeout=None):
        woken = super().wait(timeout)
        self.wakes += 1
        return woken


def test_a_run_past_its_limit_is_terminated_and_one_within_it_is_not():
    watchdog = Watchdog()
    with watchdog.limit(0.05) as short:
        assert eventually(lambda: short.terminate, 2.0)
    with watchdog.limit(30) as long:
        time.sleep(0.1)
        assert not long.terminate


def test_a_shorter_deadline_wakes_the_watchdog_due_later():
    """A long run is under way; a short one that starts beside it is still stopped in time."""
    watchdog = Watchdog()
    with watchdog.limit(30) as long:
        time.sleep(0.05)  # the watchdog's thread now sleeps until the long run's deadline
        start = time.monotonic()
        with watchdog.limit(0.05) as short:
            assert eventually(lambda: short.terminate, 2.0)
            assert time.monotonic() - start < 1.0
        assert not long.terminate


def test_runs_that_start_after_the_first_wake_nobody():
    """At one request at a time each run starts after the last ended: the thread sleeps on until the first
    run's deadline, and the later runs' starts do not wake it."""
    watchdog = Watchdog()
    watchdog._cond = cond = CountingCondition()
    with watchdog.limit(30):
        pass
    time.sleep(0.05)  # the thread now sleeps until the first run's deadline
    before = cond.wakes
    for _ in range(20):
        with watchdog.limit(30) as options:
            pass
    time.sleep(0.05)
    assert cond.wakes == before and not options.terminate


def test_a_run_that_starts_after_the_thread_went_idle_is_still_stopped():
    """Runs end, the thread finds no deadline when it looks, and sleeps until woken; a later run wakes it."""
    watchdog = Watchdog()
    with watchdog.limit(0.02):
        pass
    time.sleep(0.1)  # past that deadline: the thread looked, found the heap empty, and sleeps without a time
    with watchdog.limit(0.05) as late:
        assert eventually(lambda: late.terminate, 2.0)
