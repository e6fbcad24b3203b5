"""Admission of forward views (`service.middleware`): a bounded, first-come-first-served line before the
running requests, 503 `busy` with `Retry-After` only when the line is full or a wait runs out."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.middleware import Admission
from tests.conftest import run_async


def run(coro):
    return run_async(coro, timeout=30)


def test_requests_past_the_running_limit_wait_their_turn_in_order():
    async def scenario():
        admission = Admission(running=2, queued=10, wait_s=5)
        order = []

        async def request(name: str, hold: float):
            assert await admission.enter()
            order.append(name)
            await asyncio.sleep(hold)
            admission.leave()

        first = [asyncio.create_task(request(n, 0.05)) for n in ("a", "b")]
        await asyncio.sleep(0)
        later = []
        for name in "cdef":  # they queue in this order
            later.append(asyncio.create_task(request(name, 0.0)))
            await asyncio.sleep(0)
        assert admission.active == 2 and len(admission._waiting) == 4
        await asyncio.gather(*first, *later)
        assert order == list("abcdef") and admission.active == 0 and admission.shed == 0

    run(scenario())


def test_a_full_line_sheds_at_once_and_a_long_wait_sheds_when_it_runs_out():
    async def scenario():
        admission = Admission(running=1, queued=1, wait_s=0.2)
        assert await admission.enter()  # runs, and holds its place throughout
        waiter = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        start = time.perf_counter()
        assert not await admission.enter()  # the line (one place) is full: no wait
        assert time.perf_counter() - start < 0.05
        assert not await waiter  # it waited 0.2 s for a place that never came
        assert admission.shed == 2 and not admission._waiting
        admission.leave()
        assert admission.active == 0
        assert await admission.enter()  # free again

    run(scenario())


def test_a_cancelled_waiter_gives_up_its_place_in_line():
    async def scenario():
        admission = Admission(running=1, queued=4, wait_s=5)
        assert await admission.enter()
        gone = asyncio.create_task(admission.enter())
        stays = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        gone.cancel()  # the client hung up while waiting
        with pytest.raises(asyncio.CancelledError):
            await gone
        admission.leave()
        assert await stays and admission.active == 1 and not admission._waiting

    run(scenario())


def test_the_api_sheds_with_503_busy_and_retry_after_only_past_the_line(settings):
    """Over HTTP, with one place and no line: while one predict holds the place, another gets 503 `busy`
    with Retry-After; with a line, the same second request waits and is answered 200."""
    from fastapi.testclient import TestClient

    from models import forward
    from service.app import create_app
    from tests.conftest import encode, sample

    image = encode(sample("chelsea")[:64, :64])
    for queued, expected in ((0, 503), (4, 200)):
        app = create_app(settings.model_copy(update={"max_concurrent_requests": 1, "max_queued_requests": queued}))
        with TestClient(app) as client:
            image_id = client.post("/v1/images", files={"file": ("c.png", image, "image/png")}).json()["id"]
            body = {"image": {"id": image_id}}
            assert client.post("/v1/models/efficientnet-lite0/predict", json=body).status_code == 200  # warm
            entered, release = threading.Event(), threading.Event()
            real = forward.predict

            def held(*args, entered=entered, release=release, real=real, **kwargs):  # holds its place till released
                entered.set()
                release.wait(10)
                return real(*args, **kwargs)

            forward.predict = held
            try:
                first = threading.Thread(target=client.post, args=("/v1/models/efficientnet-lite0/predict",),
                                         kwargs={"json": body})
                first.start()
                assert entered.wait(10)
                forward.predict = real
                if expected == 503:
                    second = client.post("/v1/models/efficientnet-lite0/predict", json=body)
                else:  # it waits in line: let the first go a moment after it has queued
                    threading.Timer(0.3, release.set).start()
                    second = client.post("/v1/models/efficientnet-lite0/predict", json=body)
            finally:
                forward.predict = real
                release.set()
                first.join(10)
            assert second.status_code == expected, second.text
            if expected == 503:
                assert second.json()["error"]["code"] == "busy" and second.headers["retry-after"] == "1"
                assert second.headers["x-request-id"]
