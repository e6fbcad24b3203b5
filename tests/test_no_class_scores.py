"""Backbones and feature extractors (no N×K or N×K×1×1 output) are accepted with `num_classes: null`.

What needs no class works on them; what needs one (predict, occlusion, a `target`, a kind whose
default objective is the top-1 class) answers 422 `no_class_scores`, jobs at submission with
nothing queued. The real app, a real worker process (`python -m workers`) and the real Redis.
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from torch import nn

from core.settings import Settings
from models.validate import ModelRejected
from service.app import create_app
from tests.conftest import REDIS_URL, clean_prefix, encode, sample
from tests.jobs.conftest import Workers, delete_rq_keys, job_ids, wait_for
from tests.onnx_builders import CURRENT_OPSET, export, seeded

CAT = encode(sample("chelsea"))
SIZE = 32


class TwoConvNet(nn.Module):
    """A feature extractor: conv-ReLU-conv, output N×4×H×W (no class scores)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


@pytest.fixture(scope="module")
def backbone_settings(tmp_path_factory):
    token = uuid.uuid4().hex[:8]
    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-backbone-{token}:", job_queue=f"test-backbone-{token}",
                        data_dir=tmp_path_factory.mktemp("data"))
    yield settings
    delete_rq_keys(settings.redis_url, {settings.job_queue} | job_ids(settings))
    clean_prefix(settings.redis_prefix)


@pytest.fixture(scope="module")
def worker(backbone_settings, tmp_path_factory):
    pool = Workers(backbone_settings, tmp_path_factory.mktemp("worker-logs"))
    pool.start(wait=False)  # comes up (imports torch) while the model is uploaded
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def app_client(backbone_settings, worker):
    with TestClient(create_app(backbone_settings), raise_server_exceptions=False) as client:
        yield client


def upload(client, data: bytes, name: str = "backbone", labels: str | None = None):
    files = {"file": (f"{name}.onnx", data, "application/octet-stream")}
    if labels is not None:
        files["labels"] = ("labels.txt", labels.encode(), "text/plain")
    return client.post("/v1/models", files=files)


@pytest.fixture(scope="module")
def backbone(app_client) -> dict:
    response = upload(app_client, export(seeded(TwoConvNet(), SIZE), CURRENT_OPSET, SIZE))
    assert response.status_code == 201, response.text
    return response.json()


def view(client, model: str, name: str, spec: dict):
    return client.post(f"/v1/models/{model}/{name}", files={"image": ("cat.png", CAT, "image/png")},
                       data={"spec": json.dumps(spec)})


def layer_named(info: dict, op: str) -> dict:
    return next(layer for layer in info["layers"] if layer["op"] == op)


def test_a_two_convolution_net_is_accepted_with_no_class_count(app_client, backbone):
    assert backbone["num_classes"] is None and backbone["labels"] is None
    assert backbone["input"] == {"channels": 3, "height": SIZE, "width": SIZE, "dynamic_size": False}
    assert [layer["op"] for layer in backbone["layers"]] == ["Conv", "Relu", "Conv"]
    assert backbone["layers"][-1]["shape"] == [4, SIZE, SIZE]
    assert app_client.get(f"/v1/models/{backbone['id']}").json()["num_classes"] is None
    listed = {m["id"]: m for m in app_client.get("/v1/models").json()["models"]}
    assert listed[backbone["id"]]["num_classes"] is None


def test_labels_for_a_model_without_class_scores_are_refused(app_client):
    response = upload(app_client, export(seeded(TwoConvNet(), SIZE), CURRENT_OPSET, SIZE), "labelled", "a\nb\n")
    assert response.status_code == 422 and response.json()["error"]["code"] == "labels_mismatch", response.text


def test_activations_and_filters_work_on_a_backbone(app_client, backbone):
    last = backbone["layers"][-1]["name"]
    response = view(app_client, backbone["id"], "activations", {"layer": last, "format": "npy"})
    assert response.status_code == 200, response.text
    maps = np.load(io.BytesIO(response.content))
    assert maps.shape == (4, SIZE, SIZE) and np.isfinite(maps).all() and maps.std() > 0
    stats = view(app_client, backbone["id"], "activations", {"layer": last, "format": "json"})
    assert stats.status_code == 200 and stats.json()["shape"] == [4, SIZE, SIZE]
    png = app_client.get(f"/v1/models/{backbone['id']}/layers/{last}/filters")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


@pytest.mark.parametrize("name, spec", [("predict", {}), ("occlusion", {"patch": 8}),
                                        ("occlusion", {"patch": 8, "target": 0})])
def test_class_views_answer_no_class_scores(app_client, backbone, name, spec):
    response = view(app_client, backbone["id"], name, spec)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "no_class_scores"


def submit(client, model: str, kind: str, params: dict, image: bool = True, wait: float = 0):
    spec = {"kind": kind, "model": model, "params": params}
    if not image:
        return client.post(f"/v1/jobs?wait={wait}", json=spec)
    return client.post(f"/v1/jobs?wait={wait}", files={"image": ("cat.png", CAT, "image/png")},
                       data={"spec": json.dumps(spec)})


CLASS_NEEDING = [
    ("saliency", {}, True), ("saliency", {"target": 0}, True), ("gradcam", {}, True), ("smoothgrad", {}, True),
    ("integrated_gradients", {}, True), ("guided_backprop", {}, True), ("deconvnet", {"target": 1}, True),
    ("class_model", {"target": 0}, False), ("adversarial", {"target": 0}, True),
]


@pytest.mark.parametrize("kind, params, image", CLASS_NEEDING)
def test_jobs_that_need_a_class_are_refused_at_submission(app_client, backbone, backbone_settings, kind, params, image):
    queued = redis.Redis.from_url(REDIS_URL).llen(f"rq:queue:{backbone_settings.job_queue}")
    before = len(app_client.get("/v1/jobs").json()["jobs"])
    response = submit(app_client, backbone["id"], kind, params, image)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "no_class_scores"
    assert len(app_client.get("/v1/jobs").json()["jobs"]) == before  # nothing was queued
    assert redis.Redis.from_url(REDIS_URL).llen(f"rq:queue:{backbone_settings.job_queue}") == queued


def test_feature_vis_and_a_unit_projection_run_on_a_backbone(app_client, backbone, worker, backbone_settings):
    worker.wait_ready(worker.processes[0], backbone_settings)
    last, relu = backbone["layers"][-1]["name"], layer_named(backbone, "Relu")["name"]
    made = submit(app_client, backbone["id"], "feature_vis", {"layer": last, "channel": 1, "size": SIZE, "steps": 6,
                                                              "preview_every": 0}, image=False)
    projected = submit(app_client, backbone["id"], "guided_backprop", {"layer": relu, "channel": 2})
    assert made.status_code in (200, 202), made.text
    assert projected.status_code in (200, 202), projected.text

    job = wait_for(app_client, made.json()["id"], timeout=180)
    assert job["status"] == "finished", job
    assert np.isfinite(job["result"]["metrics"]["objective"])

    job = wait_for(app_client, projected.json()["id"], timeout=180)
    assert job["status"] == "finished", job
    assert job["result"]["metrics"]["layer"] == relu and job["result"]["metrics"]["channel"] == 2
    attribution = np.load(io.BytesIO(app_client.get(f"/v1/jobs/{job['id']}/artifacts/attribution.npy").content))
    assert attribution.shape == (3, SIZE, SIZE) and np.abs(attribution).max() > 0


def test_the_analysis_tells_class_scores_from_other_outputs():
    from models.analysis import class_count

    rng = np.random.default_rng(0)
    assert class_count(rng.standard_normal((2, 10)).astype(np.float32), "out", 2) == 10
    assert class_count(rng.standard_normal((2, 10, 1, 1)).astype(np.float32), "out", 2) == 10
    assert class_count(rng.standard_normal((2, 4, 32, 32)).astype(np.float32), "out", 2) is None
    assert class_count(rng.standard_normal((2, 7, 3)).astype(np.float32), "out", 2) is None
    assert class_count(rng.standard_normal((2,)).astype(np.float32), "out", 2) is None
    broken = np.full((2, 10), np.nan, np.float32)
    for scores in (broken, np.zeros((2, 10), np.int64)):
        with pytest.raises(ModelRejected) as refused:
            class_count(scores, "out", 2)
        assert refused.value.code == "bad_class_scores"
    with pytest.raises(ModelRejected) as refused:
        class_count(np.full((2, 4, 8, 8), np.inf, np.float32), "out", 2)
    assert refused.value.code == "bad_output"


def test_params_resolve_on_a_record_without_class_scores():
    from core.errors import Invalid
    from core.kinds.registry import KINDS
    from core.model_record import InputSpec, Layer, ModelRecord, Preprocess, ReceptiveField

    field = ReceptiveField(size=3, stride=1, start=-1)
    record = ModelRecord(id="backbone", name="backbone", source="upload", input=InputSpec(channels=3, height=32, width=32),
                         preprocess=Preprocess(), num_classes=None, onnx_sha256="0" * 64, input_name="image",
                         logits_name="out", layers=[Layer(name=n, op=op, shape=[c, 32, 32], receptive_field=field)
                                                    for n, op, c in (("a", "Conv", 8), ("b", "Relu", 8), ("out", "Conv", 4))])
    works = {"guided_backprop": {"layer": "b", "channel": 2}, "deconvnet": {"layer": "b", "channel": 2},
             "feature_vis": {"layer": "out", "channel": 1}, "inversion": {}, "deepdream": {}, "texture": {},
             "style_transfer": {}, "top_activations": {}, "embedding": {"method": "pca"}, "neighbors": {},
             "unit_stats": {}}
    for kind, params in works.items():
        KINDS[kind].params(**params).resolve(record)
    needs = {"saliency": {}, "gradcam": {}, "smoothgrad": {}, "integrated_gradients": {}, "guided_backprop": {},
             "deconvnet": {"target": 0}, "class_model": {"target": 0}, "adversarial": {"target": "cat"}}
    for kind, params in needs.items():
        with pytest.raises(Invalid) as refused:
            KINDS[kind].params(**params).resolve(record)
        assert refused.value.code == "no_class_scores" and refused.value.status == 422, kind
