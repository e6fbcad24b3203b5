"""Background work of the forward runtimes (`models.runtimes.when_quiet`): a session build or batch measurement
handed over during a forward run starts once no run is in flight, so it never takes the cores from the run of the
request that asked for it; under a load that never pauses it starts anyway, after `BACKGROUND_PATIENCE_S`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from models import runtimes
from models.runtimes import InFlight, when_quiet


def test_work_handed_over_during_a_run_starts_when_the_last_run_ends():
    in_flight, started = InFlight(), []
    with ThreadPoolExecutor(max_workers=1) as background:
        with in_flight.running():
            with in_flight.running():  # nested: a layer's request around its runs
                when_quiet(background, in_flight, lambda: started.append(time.monotonic()))
            time.sleep(0.2)
            assert not started
            ended = time.monotonic()
    assert started and started[0] >= ended


def test_under_a_load_that_never_pauses_it_starts_after_its_patience(monkeypatch):
    monkeypatch.setattr(runtimes, "BACKGROUND_PATIENCE_S", 0.1)
    in_flight, started = InFlight(), []
    with ThreadPoolExecutor(max_workers=1) as background:
        with in_flight.running():
            begin = time.monotonic()
            when_quiet(background, in_flight, lambda: started.append(time.monotonic()))
            time.sleep(0.5)
            assert started and 0.08 <= started[0] - begin < 0.4
    assert in_flight.wait_idle(0)
