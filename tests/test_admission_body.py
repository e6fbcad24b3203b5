"""Issue 29: a forward view takes its admission place only once its body has arrived, so a client that sends its
body slowly holds no place (`service.middleware.Observe` and `Admission.arrived`); and keys share the places
(`service.admission`) over HTTP as they do in `Admission` alone."""

from __future__ import annotations

import asyncio

from service.admission import Admission
from service.middleware import Observe
from tests.test_admission import run

PATH = "/v1/models/m/predict"


async def route(scope, receive, send):
    """A forward view as far as admission sees it: reads its whole body, then answers 200 with its length."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def request(chunks: list[bytes], pause_s: float):
    """(scope, receive) of a POST whose body comes in `chunks`, `pause_s` apart."""
    scope = {"type": "http", "method": "POST", "path": PATH, "headers": []}
    left = list(chunks)

    async def receive():
        await asyncio.sleep(pause_s)
        chunk = left.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(left)}

    return scope, receive


async def answer(app, scope, receive) -> tuple[int, bytes]:
    sent = []

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_slow_upload_holds_no_place_while_its_body_arrives():
    async def scenario():
        app = Observe(route, Admission(running=1, queued=0, wait_s=0.05))
        slow = asyncio.create_task(answer(app, *request([b"x" * 1000] * 10, 0.05)))  # half a second of body
        await asyncio.sleep(0.1)
        quick = await answer(app, *request([b"y" * 10], 0))
        return quick, await slow

    quick, slow = run(scenario())
    assert quick == (200, b"10")  # before: 503 `busy`, the one place held by the slow upload
    assert slow == (200, b"10000")


def test_a_body_over_the_buffer_limit_streams_on_to_the_route_whole():
    async def scenario():
        admission = Admission(running=1, queued=0, wait_s=0.05, body_bytes=2500)
        return await answer(Observe(route, admission), *request([b"z" * 1000] * 6, 0))

    assert run(scenario()) == (200, b"6000")


def test_a_key_with_forward_views_in_flight_waits_for_its_share_while_another_key_has_one():
    """Through `Observe`, keys told apart by their `Authorization` header: alone, a key runs all its views at once;
    with another key's view in flight, its next view waits until its own have ended (two run slots: one each)."""
    async def scenario():
        started: dict[str, float] = {}

        async def slow_route(scope, receive, send):
            started[scope["name"]] = asyncio.get_running_loop().time()
            await asyncio.sleep(0.2)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        app = Observe(slow_route, Admission(running=8, queued=8, wait_s=5, run_slots=2, linger_s=0.05))

        async def empty():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def call(name: str, key: bytes, after_s: float):
            await asyncio.sleep(after_s)
            scope = {"type": "http", "method": "POST", "path": PATH, "name": name,
                     "headers": [(b"authorization", b"Bearer " + key)]}
            await answer(app, scope, empty)

        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(call("a1", b"a", 0), call("a2", b"a", 0), call("b1", b"b", 0.05), call("a3", b"a", 0.1))
        alone = asyncio.get_running_loop().time()
        await asyncio.gather(*(call(f"solo{i}", b"a", 0) for i in range(3)))
        return {name: at - (alone if name.startswith("solo") else t0) for name, at in started.items()}

    started = run(scenario())
    assert started["a1"] < 0.05 and started["a2"] < 0.05 and 0.04 < started["b1"] < 0.1
    assert started["a3"] >= 0.19  # waited for a1 and a2 while b1 was in flight
    assert all(started[f"solo{i}"] < 0.05 for i in range(3))  # alone: nothing held back
