"""No cold start (API.md, Timing): `/readyz` says ready only once the built-in model's session is built and its
batch size measured, `/healthz` answers at once; recently used sessions are warmed after start, within the budget;
a new layer's batch size is measured after its first request, not in it."""

from __future__ import annotations

import threading
import uuid

import pytest
from fastapi.testclient import TestClient

import models.runtimes
from models.builtin import BUILTIN_ID
from models.runtimes import ModelRuntime, Runtimes
from models.warm import RecentSessions, Warmer
from service.app import create_app
from tests.conftest import clean_prefix, encode, eventually, sample

LAYER = "_blocks.4._relu0"


@pytest.fixture
def own_settings(settings):
    prefix = f"test-warm-{uuid.uuid4().hex[:8]}:"
    yield settings.model_copy(update={"redis_prefix": prefix})
    clean_prefix(prefix)


def test_ready_only_once_the_builtin_session_is_warm_and_its_first_predict_builds_nothing(own_settings, monkeypatch):
    gate = threading.Event()
    real = ModelRuntime.warm
    monkeypatch.setattr(ModelRuntime, "warm", lambda self, variant: gate.wait(60) and real(self, variant))
    with TestClient(create_app(own_settings)) as client:
        assert client.get("/healthz").status_code == 200
        waiting = client.get("/readyz")
        assert waiting.status_code == 503 and "warming up" in waiting.json()["error"]["message"]
        gate.set()
        assert eventually(lambda: client.get("/readyz").status_code == 200, 120)
        ctx = client.app.state.ctx
        record = ctx.models.get(BUILTIN_ID)
        rt = ctx.runtimes.get(record)
        for variant in ("plain", "probe"):  # predictions, and any layer's first activations
            assert ctx.runtimes.sessions.held((record.id, record.onnx_sha256, variant))
            assert rt.measured(variant) is not None
        builds = ctx.runtimes.sessions.stats()["builds"]
        answer = client.post(f"/v1/models/{BUILTIN_ID}/predict", files={"image": ("c.png", encode(sample("chelsea")),
                                                                                      "image/png")}, data={"spec": "{}"})
        assert answer.status_code == 200
        assert ctx.runtimes.sessions.stats()["builds"] == builds  # nothing built in the first request


def test_a_new_layers_session_is_built_and_measured_after_its_first_request_not_in_it(own_settings, monkeypatch):
    with TestClient(create_app(own_settings)) as client:
        assert eventually(lambda: client.get("/readyz").status_code == 200, 120)
        measuring, release = threading.Event(), threading.Event()
        real = models.runtimes.best_batch

        def held_best_batch(run, limit):
            measuring.set()
            release.wait(60)
            return real(run, limit)
        monkeypatch.setattr(models.runtimes, "best_batch", held_best_batch)
        image = client.post("/v1/images", files={"file": ("c.png", encode(sample("chelsea")), "image/png")}).json()["id"]
        first = client.post(f"/v1/models/{BUILTIN_ID}/activations",
                            json={"image": {"id": image}, "layer": LAYER, "format": "json"})
        assert first.status_code == 200  # answered (on the probe session) while the measuring has not finished
        rt = client.app.state.ctx.runtimes.get(client.app.state.ctx.models.get(BUILTIN_ID))
        assert measuring.wait(30) and rt.measured(f"upto:{LAYER}") is None
        release.set()
        assert eventually(lambda: rt.measured(f"upto:{LAYER}") is not None, 120)
        again = client.post(f"/v1/models/{BUILTIN_ID}/activations",
                            json={"image": {"id": image}, "layer": LAYER, "format": "json"})
        assert again.json() == first.json()  # the layer's own session gives the probe's numbers
        recent = RecentSessions(client.app.state.ctx.redis, own_settings.redis_prefix, keep=8)
        assert eventually(lambda: (BUILTIN_ID, f"upto:{LAYER}") in recent.newest(), 120)

    with TestClient(create_app(own_settings)) as again:  # a restart warms what was used, in the background
        warmer = again.app.state.ctx.warmer
        assert eventually(lambda: any(w[:2] == (BUILTIN_ID, f"upto:{LAYER}") for w in warmer.warmed), 120)
        rt = again.app.state.ctx.runtimes.get(again.app.state.ctx.models.get(BUILTIN_ID))
        assert rt.measured(f"upto:{LAYER}") is not None


def test_recent_sessions_are_warmed_only_within_the_budget(builtin_store, own_settings):
    import redis

    client = redis.Redis.from_url(own_settings.redis_url)
    recent = RecentSessions(client, own_settings.redis_prefix, keep=2)
    for variant in ("plain", "upto:_blocks.2", f"upto:{LAYER}"):
        recent(BUILTIN_ID, variant)
    assert recent.newest() == [(BUILTIN_ID, f"upto:{LAYER}"), (BUILTIN_ID, "upto:_blocks.2")]  # the newest two
    tiny = Runtimes(builtin_store, own_settings, budget_bytes=1024, background=True)
    try:
        warmer = Warmer(tiny, builtin_store, recent, first=[])
        assert not warmer.warm(BUILTIN_ID, "plain")  # over the budget: not built
        assert tiny.count() == 0
        assert warmer.warm(BUILTIN_ID, "plain", within_budget=False)  # the built-in's is warmed whatever the budget
        assert not warmer.warm("no-such-model", "plain")
    finally:
        tiny.close()


def test_a_stopping_process_warms_nothing_more_and_its_requests_still_run(builtin_store, builtin, own_settings):
    import numpy as np

    stopped = Runtimes(builtin_store, own_settings, background=True, used=lambda model, variant: None)
    stopped.close()
    rt = stopped.get(builtin)
    assert rt.warm("plain") is False and stopped.count() == 0  # nothing built after close
    x = np.zeros((1, 3, 224, 224), np.float32)
    assert rt.logits(x).shape == (1, 1000)  # a request in flight still runs (its batch size left unmeasured)
    assert rt.measured("plain") is None
