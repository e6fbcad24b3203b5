"""Admission of forward views (`service.admission`): bounded lines before the running requests, first come first
served within a key, fair between keys; 503 `busy` with `Retry-After` only when the lines are full or a wait runs
out."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.admission import Admission, beyond_share
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
        assert admission.active == 2 and admission.waiting == 4
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
        assert admission.shed == 2 and not admission.waiting
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
        assert await stays and admission.active == 1 and not admission.waiting

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


def most_at_once(admission: Admission, requests: list[tuple[str, float, float]]) -> dict[str, int]:
    """Send `requests` ((key, start s, hold s)) through `admission`; the most of each key's requests admitted at
    once."""
    inside: dict[str, int] = {}
    most: dict[str, int] = {}

    async def request(key: str, start: float, hold: float):
        await asyncio.sleep(start)
        assert await admission.enter(key)
        inside[key] = inside.get(key, 0) + 1
        most[key] = max(most.get(key, 0), inside[key])
        await asyncio.sleep(hold)
        inside[key] -= 1
        admission.leave(key)

    async def scenario():
        await asyncio.gather(*(request(*r) for r in requests))

    run(scenario())
    return most


def test_a_key_alone_runs_as_many_as_admission_lets_in():
    admission = Admission(running=6, queued=10, wait_s=5, run_slots=2)
    most = most_at_once(admission, [("a", 0, 0.05)] * 8)
    assert most == {"a": 6} and admission.active == 0 and not admission.by_key


def test_while_two_keys_are_in_flight_each_runs_its_share_of_the_run_slots():
    """Two run slots, two keys: `bob` comes while `alice`, alone till then, has four running. His first goes in at
    once; from then on each runs one at a time: alice's next waits until she is down to none running, bob's second
    until his first is done."""
    async def scenario():
        admission = Admission(running=8, queued=20, wait_s=5, run_slots=2, linger_s=10)
        for _ in range(4):
            assert await admission.enter("alice")  # alone: no share
        assert await admission.enter("bob")
        alice = asyncio.create_task(admission.enter("alice"))
        bob = asyncio.create_task(admission.enter("bob"))
        await asyncio.sleep(0.01)
        assert not alice.done() and not bob.done() and admission.by_key == {"alice": 4, "bob": 1}
        admission.leave("bob")
        assert await bob
        for left in (3, 2, 1):
            admission.leave("alice")
            await asyncio.sleep(0)
            assert not alice.done() and admission.by_key == {"alice": left, "bob": 1}
        admission.leave("alice")
        assert await alice and admission.by_key == {"alice": 1, "bob": 1}

    run(scenario())


def test_a_view_let_in_beyond_its_keys_share_is_marked_so():
    """Two run slots: `flood` has one running and `calm` one; flood's next waits for its own and is let in beyond
    its share; calm's, let in at once, is not; and flood's request held back while calm was in flight is not beyond
    its share when calm has gone by the time it goes in (flood is alone then)."""
    async def scenario():
        admission = Admission(running=4, queued=20, wait_s=5, run_slots=2, linger_s=0.05)

        async def enter(key: str) -> tuple[bool, bool]:
            return await admission.enter(key), beyond_share()  # read in the request's own context
        assert await enter("flood") == (True, False)  # alone: as many as `running`
        assert await enter("calm") == (True, False)
        held = asyncio.create_task(enter("flood"))
        await asyncio.sleep(0.01)
        assert not held.done()
        admission.leave("flood")
        assert await held == (True, True)  # waited for flood's own view while calm was in flight
        admission.leave("calm")
        late = asyncio.create_task(enter("flood"))  # flood is at its share while calm lingers
        await asyncio.sleep(0.01)
        assert not late.done()
        assert await late == (True, False)  # let in when calm's linger ended: flood alone by then
        admission.leave("flood")
        admission.leave("flood")
        assert admission.active == 0

    run(scenario())


def test_the_lightest_key_goes_next_and_a_key_stays_in_flight_for_its_linger():
    """One place: while `heavy` has many waiting, `light`'s requests (one at a time, 10 ms apart) each go next;
    with its linger, `light` keeps a place of two run slots between its requests."""
    async def scenario():
        admission = Admission(running=2, queued=20, wait_s=5, run_slots=2, linger_s=0.2)
        for _ in range(2):
            assert await admission.enter("heavy")
        heavies = [asyncio.create_task(admission.enter("heavy")) for _ in range(5)]
        await asyncio.sleep(0)
        light = asyncio.create_task(admission.enter("light"))
        await asyncio.sleep(0)
        admission.leave("heavy")  # the place goes to light, though five of heavy's waited longer
        assert await light and admission.by_key == {"heavy": 1, "light": 1}
        admission.leave("light")
        await asyncio.sleep(0.01)
        assert admission.by_key == {"heavy": 1}  # light lingers: heavy stays at its share of one
        assert await admission.enter("light")  # and light's next request finds its place free
        admission.leave("light")
        await asyncio.sleep(0.3)  # light's linger over: heavy takes both places
        assert admission.by_key == {"heavy": 2}
        for _ in range(6):  # two running and four still waiting
            admission.leave("heavy")
        assert all([await h for h in heavies]) and admission.active == 0

    run(scenario())


def test_with_the_lines_full_the_longest_gives_way_to_a_key_with_none_waiting():
    async def scenario():
        admission = Admission(running=1, queued=3, wait_s=5, run_slots=1)
        assert await admission.enter("flood")
        flood = [asyncio.create_task(admission.enter("flood")) for _ in range(3)]
        await asyncio.sleep(0)
        assert not await admission.enter("flood")  # its own line is the longest: the newcomer is shed
        calm = asyncio.create_task(admission.enter("calm"))
        await asyncio.sleep(0)
        assert await flood[2] is False and admission.shed == 2  # flood's newest gave way
        admission.leave("flood")
        assert await calm  # and calm, the lightest, went next
        admission.leave("calm")
        for waiter in flood[:2]:
            assert await waiter
            admission.leave("flood")
        assert admission.active == 0 and not admission.waiting

    run(scenario())
