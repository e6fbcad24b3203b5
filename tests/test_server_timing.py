"""`Server-Timing` on every forward view (API.md, Timing): queue, decode, forward and encode in milliseconds, as the
W3C spec writes them, adding up to no more than the request's `total` in the API, itself no more than the client
waited; and how waits are told apart from computing."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from core import timing
from models.batching import DynamicBatcher
from tests.conftest import encode, sample

ENTRY = re.compile(r"^(?P<name>[a-z]+);dur=(?P<ms>\d+(\.\d+)?)$")
VIEWS = {
    "predict": {},
    "activations": {"layer": "_blocks.2", "format": "json"},
    "occlusion": {"patch": 112, "stride": 112, "format": "json"},
}


def phases_of(header: str) -> dict[str, float]:
    entries = [ENTRY.match(part.strip()) for part in header.split(",")]
    assert all(entries), header
    return {e["name"]: float(e["ms"]) for e in entries}


@pytest.fixture(scope="module")
def image_id(client):
    return client.post("/v1/images", files={"file": ("c.png", encode(sample("chelsea")), "image/png")}).json()["id"]


@pytest.mark.parametrize("view", VIEWS)
def test_every_forward_view_splits_its_time_in_the_four_phases_and_its_total(client, image_id, view):
    client.post(f"/v1/models/efficientnet-lite0/{view}", json={"image": {"id": image_id}, **VIEWS[view]})  # warm
    start = time.perf_counter()
    answer = client.post(f"/v1/models/efficientnet-lite0/{view}", json={"image": {"id": image_id}, **VIEWS[view]})
    took_ms = (time.perf_counter() - start) * 1000
    assert answer.status_code == 200, answer.text
    phases = phases_of(answer.headers["server-timing"])
    assert list(phases) == ["queue", "decode", "forward", "encode", "total"]
    total = phases.pop("total")
    assert phases["forward"] > 0
    assert sum(phases.values()) <= total + 0.5  # the phases lie within the request's time in the API (each rounded)
    assert total <= took_ms + 0.1  # which lies within what the client waited


def test_a_new_image_is_decoded_and_a_known_one_is_not(client):
    data = encode(sample("astronaut"))
    fresh = client.post("/v1/models/efficientnet-lite0/predict", files={"image": ("a.png", data, "image/png")},
                        data={"spec": "{}"})
    assert fresh.status_code == 200, fresh.text
    first = phases_of(fresh.headers["server-timing"])
    image = client.post("/v1/images", files={"file": ("a.png", data, "image/png")}).json()["id"]
    again = phases_of(client.post("/v1/models/efficientnet-lite0/predict",
                                  json={"image": {"id": image}}).headers["server-timing"])
    assert first["decode"] > again["decode"]  # the second comes from the input cache


def test_filters_and_errors_of_a_forward_view_carry_it_too(client, image_id):
    filters = client.get("/v1/models/efficientnet-lite0/layers/_bn0/filters")
    assert filters.status_code == 200
    assert set(phases_of(filters.headers["server-timing"])) == {"queue", "decode", "forward", "encode", "total"}
    refused = client.post("/v1/models/efficientnet-lite0/activations", json={"image": {"id": image_id}, "layer": "x"})
    assert refused.status_code == 422 and "server-timing" in refused.headers
    assert "server-timing" not in client.get("/healthz").headers


def test_a_wait_inside_a_phase_counts_as_queue_not_in_that_phase():
    phases = timing.Phases()
    start = time.perf_counter()
    with phases.timed("forward"):
        time.sleep(0.02)
        phases.wait(0.015)
    took = time.perf_counter() - start
    assert phases.seconds["queue"] == 0.015
    assert 0 < phases.seconds["forward"] <= took - 0.015 + 1e-9
    assert phases.header().startswith("queue;dur=15.0, decode;dur=0.0, forward;dur=")


def test_outside_a_timed_request_nothing_is_recorded():
    """A request's `Phases` that is not the current one gets nothing from `timing.timed` and `timing.wait`; made
    current, the same calls are recorded (the wait as queue, left out of the timed phase)."""
    phases = timing.Phases()
    assert timing.current.get() is None
    with timing.timed("decode"):
        timing.wait(1.0)
        time.sleep(0.01)
    assert phases.seconds == dict.fromkeys(timing.PHASES, 0.0)
    assert timing.current.get() is None
    token = timing.current.set(phases)
    try:
        with timing.timed("decode"):
            time.sleep(0.02)
            timing.wait(0.01)  # half of the sleep was a wait
    finally:
        timing.current.reset(token)
    assert phases.seconds["queue"] == 0.01 and phases.seconds["decode"] >= 0.009


class GatedSession:
    """A session whose runs wait for `release`: a batch that takes as long as the test says."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def run(self, outputs, feeds):
        self.entered.set()
        self.release.wait(10)
        return [feeds["x"] * 2]


def test_a_request_waiting_for_the_batch_ahead_of_it_reports_that_wait_as_queue():
    batcher = DynamicBatcher(max_rows=1, instances=1)
    session = GatedSession()
    seen: dict[str, timing.Phases] = {}

    def request(name: str) -> None:
        phases = seen[name] = timing.Phases()
        token = timing.current.set(phases)
        try:
            with phases.timed("forward"):
                batcher.run("k", session, ["y"], "x", np.ones((1, 2), np.float32))
        finally:
            timing.current.reset(token)

    first = threading.Thread(target=request, args=("first",))
    first.start()
    assert session.entered.wait(10)  # the first batch runs
    second = threading.Thread(target=request, args=("second",))
    second.start()
    while sum(len(q.waiting) for q in batcher._queues.values()) < 1:
        time.sleep(0.001)
    time.sleep(0.05)
    session.release.set()
    first.join(10)
    second.join(10)
    assert seen["second"].seconds["queue"] >= 0.05  # it waited for the first batch before its own ran
    assert seen["first"].seconds["queue"] < 0.05
