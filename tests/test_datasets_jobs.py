"""Dataset kinds end to end: the real app, a real worker process (`python -m workers`), the real Redis."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import redis
import torch
from PIL import Image

from core.settings import Settings
from tests.conftest import REDIS_URL, ROOT, clean_prefix
from tests.datasets.conftest import brute_force_top, photo_files
from tests.jobs.conftest import stop_process
from tests.test_datasets import data_dir

MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(test client, settings) with one worker serving the module's own queue and data dir."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    token = uuid.uuid4().hex[:8]
    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-dsjob-{token}:", job_queue=f"test-ds-{token}",
                        data_dir=data_dir(tmp_path_factory.mktemp("dsjobs")), dataset_batch=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_") and k != "REDIS_URL"}
    env.update(CONVSCOPE_REDIS_URL=REDIS_URL, CONVSCOPE_REDIS_PREFIX=settings.redis_prefix,
               CONVSCOPE_JOB_QUEUE=settings.job_queue, CONVSCOPE_DATA_DIR=str(settings.data_dir),
               CONVSCOPE_DATASET_BATCH="4", CONVSCOPE_WORKER_WARM_UP="false", PYTHONPATH=str(ROOT))
    log = open(tmp_path_factory.mktemp("logs") / "worker.log", "w+b")
    worker = subprocess.Popen([sys.executable, "-m", "workers", "--name", f"ds-{token}"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + 90
    while not client.exists(f"{settings.redis_prefix}worker:ds-{token}"):
        assert worker.poll() is None and time.monotonic() < deadline, log.seek(0) or log.read()[-3000:]
        time.sleep(0.1)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
            yield test_client, settings
    finally:
        stop_process(worker)
        prefix = settings.redis_prefix
        jobs = {k.decode()[len(prefix) + 4:] for k in client.scan_iter(match=f"{prefix}job:*", count=1000)}
        tokens = {token} | {j for j in jobs if ":" not in j}
        clean_prefix(prefix)
        for key in client.scan_iter(match="rq:*", count=1000):
            if any(t in key.decode() for t in tokens):
                client.delete(key)
        for members in ("rq:queues", "rq:workers"):
            stale = [m for m in client.smembers(members) if token in m.decode()]
            if stale:
                client.srem(members, *stale)


@pytest.fixture(scope="module")
def dataset_id(stack):
    client, _ = stack
    files = [("files", (name, data, "image/png")) for name, data in photo_files()[:6]]
    r = client.post("/v1/datasets", files=files)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def finished(client, response) -> dict:
    assert response.status_code in (200, 202), response.text
    job = response.json()
    deadline = time.monotonic() + 120
    while job["status"] not in ("finished", "failed", "canceled") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "finished", job
    return job


def artifact(client, job: dict, name: str) -> bytes:
    r = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
    assert r.status_code == 200, r.text
    return r.content


def torch_maps(settings, dataset_id: str, record, torch_lite0, layers: list[str]) -> dict[str, np.ndarray]:
    """The torch model's outputs at `layers` for every image of the dataset (the brute-force reference)."""
    from core import images, preprocessing
    from core.stores.datasets import DatasetStore

    dataset = DatasetStore(settings.data_dir, settings.dataset_ttl_s).get(dataset_id, None)
    x = np.concatenate([preprocessing.to_tensor(preprocessing.fit(images.decode(dataset.read(i), max_bytes=1 << 30,
                                                                  max_pixels=1 << 30), record), record)
                        for i in range(dataset.count)])
    seen = {}
    hooks = [torch_lite0.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.update({name: o}))
             for name in layers]
    try:
        with torch.no_grad():
            torch_lite0(torch.from_numpy(x))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: out.numpy() for name, out in seen.items()}


def test_top_activations_and_unit_stats_run_as_jobs(stack, dataset_id, builtin, torch_lite0):
    client, settings = stack
    maps = torch_maps(settings, dataset_id, builtin, torch_lite0, ["_blocks.3._relu1", "_relu1"])
    job = finished(client, client.post("/v1/jobs?wait=60", json={
        "kind": "top_activations", "model": MODEL, "dataset": dataset_id,
        "params": {"layer": "_blocks.3._relu1", "channel": 5, "k": 3}}))
    assert job["params"] == {"layer": "_blocks.3._relu1", "channel": 5, "k": 3}
    assert job["progress"]["step"] == job["progress"]["total"] > 0
    top = json.loads(artifact(client, job, "top.json"))
    assert [(e["image_index"], *e["position"]) for e in top] == brute_force_top(maps["_blocks.3._relu1"], 5, 3)
    assert {a["name"] for a in job["result"]["artifacts"]} == {"top.json", "patches.png"}
    Image.open(io.BytesIO(artifact(client, job, "patches.png"))).verify()

    job = finished(client, client.post("/v1/jobs?wait=60", json={
        "kind": "unit_stats", "model": MODEL, "dataset": dataset_id, "params": {}}))
    units = json.loads(artifact(client, job, "units.json"))
    assert len(units) == 1280 and job["params"]["layer"] == "_relu1"
    np.testing.assert_allclose([u["mean"] for u in units], maps["_relu1"].mean(axis=(0, 2, 3)), atol=1e-4)
    assert job["result"]["metrics"]["dead"] == sum(u["dead"] for u in units)


def test_neighbors_job_reads_an_image_and_a_dataset(stack, dataset_id):
    client, _ = stack
    name, query = photo_files()[2]
    spec = {"kind": "neighbors", "model": MODEL, "dataset": dataset_id, "params": {"k": 3, "metric": "l2"}}
    job = finished(client, client.post("/v1/jobs?wait=60", files={"image": (name, query, "image/png")},
                                       data={"spec": json.dumps(spec)}))
    found = json.loads(artifact(client, job, "neighbors.json"))
    assert found[0]["image_index"] == 2 and found[0]["name"] == name and found[0]["distance"] < 1e-3
    assert np.load(io.BytesIO(artifact(client, job, "input.npy"))).shape == (1, 3, 224, 224)


def test_dataset_jobs_are_checked_before_queueing(stack, dataset_id):
    client, _ = stack
    missing = client.post("/v1/jobs", json={"kind": "embedding", "model": MODEL, "dataset": "0" * 32})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "dataset_not_found"
    no_dataset = client.post("/v1/jobs", json={"kind": "embedding", "model": MODEL})
    assert no_dataset.status_code == 422
    bad_channel = client.post("/v1/jobs", json={"kind": "top_activations", "model": MODEL, "dataset": dataset_id,
                                                "params": {"layer": "_relu1", "channel": 5000}})
    assert bad_channel.status_code == 422 and "5000" in bad_channel.json()["error"]["message"]
    bad_layer = client.post("/v1/jobs", json={"kind": "unit_stats", "model": MODEL, "dataset": dataset_id,
                                              "params": {"layer": "nope"}})
    assert bad_layer.status_code == 422


def test_top_activation_boxes_are_in_the_dataset_images_own_pixels(stack):
    """A 199×203 photo: the built-in model (Resize(256) + CenterCrop(224)) sees it resized to 256×261
    (int(256·203/199) = 261) and cut at left round(32/2) = 16, top round(37/2) = 18, so `box` is `input_box`
    shifted by (16, 18) and scaled by (199/256, 203/261): starts floored, ends ceiled, clipped to 199×203."""
    import math
    from fractions import Fraction

    from tests.conftest import encode, sample

    client, _ = stack
    odd = encode(np.asarray(Image.fromarray(sample("astronaut")).resize((199, 203), Image.BICUBIC)))
    files = [("files", ("odd.png", odd, "image/png"))] + [("files", (name, data, "image/png"))
                                                         for name, data in photo_files()[6:8]]
    created = client.post("/v1/datasets", files=files)
    assert created.status_code == 201, created.text
    listing = client.get(f"/v1/datasets/{created.json()['id']}").json()["images"]
    sizes = {image["index"]: (image["width"], image["height"]) for image in listing}
    assert sizes[0] == (199, 203)
    job = finished(client, client.post("/v1/jobs?wait=60", json={
        "kind": "top_activations", "model": MODEL, "dataset": created.json()["id"],
        "params": {"layer": "_blocks.5._relu1", "channel": 7, "k": 3}}))
    top = json.loads(artifact(client, job, "top.json"))
    assert sorted(e["image_index"] for e in top) == [0, 1, 2]
    for e in top:
        width, height = sizes[e["image_index"]]
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (e, width, height)
        assert 0 <= e["input_box"][0] < e["input_box"][2] <= 224 and 0 <= e["input_box"][1] < e["input_box"][3] <= 224
    (odd_entry,) = [e for e in top if e["image_index"] == 0]
    ix0, iy0, ix1, iy1 = odd_entry["input_box"]
    fx, fy = Fraction(199, 256), Fraction(203, 261)
    assert odd_entry["box"] == [math.floor((ix0 + 16) * fx), math.floor((iy0 + 18) * fy),
                                min(math.ceil((ix1 + 16) * fx), 199), min(math.ceil((iy1 + 18) * fy), 203)]


def test_deleting_a_dataset_while_a_job_reads_it_fails_the_job_cleanly(stack, dataset_id):
    client, settings = stack
    files = [("files", (f"{n}-{name}", data, "image/png")) for n in range(8) for name, data in photo_files()]
    created = client.post("/v1/datasets", files=files)
    assert created.status_code == 201, created.text
    doomed = created.json()["id"]
    job = client.post("/v1/jobs", json={"kind": "top_activations", "model": MODEL, "dataset": doomed,
                                        "params": {"channel": 3, "k": 3}}).json()
    deadline = time.monotonic() + 60
    while (seen := client.get(f"/v1/jobs/{job['id']}").json())["progress"]["step"] < 1:
        assert seen["status"] in ("queued", "started") and time.monotonic() < deadline, seen
        time.sleep(0.02)
    assert seen["status"] == "started" and seen["progress"]["total"] == 96 // settings.dataset_batch, seen
    assert client.delete(f"/v1/datasets/{doomed}").status_code == 204
    while (ended := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "started":
        assert time.monotonic() < deadline + 60, ended
        time.sleep(0.05)
    assert ended["status"] == "failed" and ended["error"]["code"] == "dataset_not_found", ended
    assert ended["progress"]["total"] == seen["progress"]["total"]
    assert client.get(f"/v1/datasets/{doomed}").status_code == 404
    # the worker is still up: the next job (not one answered from the cache) runs and finishes
    job = finished(client, client.post("/v1/jobs?wait=60", json={
        "kind": "unit_stats", "model": MODEL, "dataset": dataset_id, "params": {"dead_fraction": 0.5}}))
    assert job["cached"] is False and job["progress"]["step"] == job["progress"]["total"] == -(-6 // 4)
