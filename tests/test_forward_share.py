"""A key's share of the forward views (`service.tenants.ForwardShare`): at most `share` at once while another key has
one running or waiting, as many as admission lets in while it is alone."""

from __future__ import annotations

import asyncio

from service.tenants import ForwardShare
from tests.conftest import run_async

PREDICT = "/v1/models/efficientnet-lite0/predict"


def scope(key: str | None, path: str = PREDICT) -> dict:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def measured(share: int, requests: list[tuple[str | None, str]]) -> dict[str, int]:
    """Run `requests` ((key, path)) at once, in order, through a ForwardShare over an app that holds each for a
    moment (bob's ten times longer than the others'); the most of each key's requests inside the app at once."""
    inside: dict[str, int] = {}
    most: dict[str, int] = {}

    async def app(scope, receive, send):
        name = (dict(scope["headers"]).get(b"authorization") or b"open").decode()
        inside[name] = inside.get(name, 0) + 1
        most[name] = max(most.get(name, 0), inside[name])
        await asyncio.sleep(0.2 if name == "Bearer bob" else 0.02)
        inside[name] -= 1

    async def scenario():
        share_layer = ForwardShare(app, share)
        await asyncio.gather(*(share_layer(scope(key, path), None, None) for key, path in requests))
        return most

    return run_async(scenario(), timeout=30)


def test_a_key_alone_runs_as_many_as_it_sends():
    assert measured(2, [("alice", PREDICT)] * 6) == {"Bearer alice": 6}


def test_a_key_keeps_to_its_share_while_another_key_has_forward_views():
    """Bob's two slow predicts are in first; alice's eight quick ones then go two at a time until bob's are done."""
    most = measured(2, [("bob", PREDICT)] * 2 + [("alice", PREDICT)] * 8)
    assert most == {"Bearer alice": 2, "Bearer bob": 2}


def test_the_open_service_and_other_routes_pass_straight_through():
    assert measured(1, [(None, PREDICT)] * 4) == {"open": 4}
    assert measured(1, [("alice", "/v1/jobs")] * 3 + [("bob", PREDICT)]) == {"Bearer alice": 3, "Bearer bob": 1}


def test_the_wait_for_a_share_is_the_requests_server_timing_queue():
    """Alice's third predict waits for one of her first two while bob's is in: that wait is reported as queue."""
    from core import timing

    reported: list[float] = []

    async def app(scope, receive, send):
        await asyncio.sleep(0.2 if dict(scope["headers"])[b"authorization"] == b"Bearer bob" else 0.05)

    async def one(layer, key):
        phases = timing.Phases()
        timing.current.set(phases)
        await layer(scope(key), None, None)
        if key == "alice":
            reported.append(phases.seconds["queue"])

    async def scenario():
        layer = ForwardShare(app, 2)
        await asyncio.gather(one(layer, "bob"), *(one(layer, "alice") for _ in range(3)))

    run_async(scenario(), timeout=30)
    assert max(sorted(reported)[:2]) < 0.005 and 0.03 < max(reported) < 0.2, reported

