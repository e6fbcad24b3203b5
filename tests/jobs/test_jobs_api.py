"""The job API end to end: real app, two real worker processes, real Redis."""

from __future__ import annotations

import io
import threading
import time

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from core import images, preprocessing
from tests.conftest import encode, sample
from tests.jobs.conftest import MODEL, read_events, submit, wait_for

EVALUATION = {"evaluate": True, "road_fractions": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "road_noise": 0.01,
              "road_random_maps": 4, "seed": 0, "evaluation_steps": 32, "deletion_baseline": "blur"}  # every attribution kind's


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_submit_runs_and_returns_artifacts(jobs_client, cat_png, builtin):
    response = submit(jobs_client, "saliency", cat_png)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "started", "finished") and job["params"] == {"target": None, **EVALUATION}
    job = wait_for(jobs_client, job["id"])
    assert job["status"] == "finished" and job["error"] is None and job["cached"] is False
    # one step for the gradient, then the scores, 32 copies a batch: ROAD's 2 × 9 × (1 + 4), deletion/insertion's
    # 2 × 32 + 1
    assert job["started_at"] and job["ended_at"] and job["progress"] == {"step": 1 + 3 + 3, "total": 7}
    assert job["result"]["metrics"]["target_label"] == "tiger cat"
    artifacts = {a["name"]: a for a in job["result"]["artifacts"]}
    assert {n: a["media_type"] for n, a in artifacts.items()} == {
        "input.npy": "application/x-npy", "attribution.npy": "application/x-npy", "heatmap.png": "image/png",
        "ranking.npy": "application/x-npy", "evaluation.json": "application/json"}
    got = {name: jobs_client.get(a["url"]) for name, a in artifacts.items()}
    assert all(r.status_code == 200 for r in got.values())
    assert got["heatmap.png"].headers["content-type"] == "image/png"
    decoded = images.decode(cat_png, max_bytes=10**8, max_pixels=10**8)
    expected = preprocessing.to_tensor(preprocessing.fit(decoded, builtin), builtin)
    np.testing.assert_array_equal(npy(got["input.npy"].content), expected)
    attribution = npy(got["attribution.npy"].content)
    assert attribution.shape == (3, 224, 224) and attribution.dtype == np.float32
    # The heatmap is the image the model saw, half covered by jet colours of the attribution's size:
    # max over channels of |gradient|, over its 99th percentile, clipped to 1 (Smilkov et al. 2017).
    heatmap = np.asarray(Image.open(io.BytesIO(got["heatmap.png"].content)).convert("RGB"), float)
    seen = np.asarray(preprocessing.fit(images.decode(cat_png, max_bytes=10**8, max_pixels=10**8), builtin), float)
    magnitude = np.abs(attribution).max(axis=0)
    heat = np.clip(magnitude / np.percentile(magnitude, 99), 0, 1)
    jet = matplotlib.colormaps["jet"]
    assert np.abs(heatmap - (0.5 * seen + 0.5 * 255 * jet(heat)[..., :3])).max() <= 4
    hot, cold = heat == 1, heat < 0.02  # the top 1 % of the gradient is dark red, where it is ~0 blue
    assert 400 <= hot.sum() <= 600 and cold.sum() > 200
    colour = (heatmap - 0.5 * seen) / 0.5
    assert np.abs(colour[hot] - 255 * np.array(jet(1.0)[:3])).max() <= 8
    assert colour[cold][:, :2].max() <= 8 and colour[cold][:, 2].min() >= 120  # blue only
    assert jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/nope.npy").status_code == 404


def test_every_default_is_filled_in_and_gradcam_layer_resolved(jobs_client, cat_png, builtin, lite0_cpu):
    job = submit(jobs_client, "gradcam", cat_png, wait=30).json()
    assert job["status"] == "finished" and job["params"] == {"target": None, "layer": "_relu1", **EVALUATION}
    attribution = npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/attribution.npy").content)
    assert attribution.shape == (1, 7, 7)
    job = submit(jobs_client, "integrated_gradients", cat_png, {"steps": 8}, wait=60).json()
    assert job["params"] == {"target": None, "steps": 8, "baseline": "black", "rule": "gauss_legendre", **EVALUATION}
    assert job["status"] == "finished", job
    # completeness_gap = |Σ attribution − (F(x) − F(x'))| / |F(x) − F(x')|, F the target's logit and
    # x' the black image (pixels 0, normalised), computed here with the torch model.
    metrics = job["result"]["metrics"]
    x = npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/input.npy").content)
    attribution = npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/attribution.npy").content)
    mean, std = (np.array(v, np.float32)[None, :, None, None] for v in (builtin.preprocess.mean, builtin.preprocess.std))
    black = np.broadcast_to(-mean / std, x.shape).astype(np.float32)
    with torch.no_grad():
        logits = lite0_cpu(torch.from_numpy(np.concatenate([x, black]))).numpy().astype(np.float64)
    target = int(logits[0].argmax())
    assert metrics["target"] == target
    assert metrics["target_logit"] == pytest.approx(logits[0, target], abs=1e-4)
    assert metrics["baseline_logit"] == pytest.approx(logits[1, target], abs=1e-4)
    difference = logits[0, target] - logits[1, target]
    gap = abs(attribution.sum(dtype=np.float64) - difference) / abs(difference)
    assert metrics["completeness_gap"] == pytest.approx(gap, rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("spec,code", [
    ({"kind": "smoothgrad", "params": {"samples": 0}}, "validation_error"),
    ({"kind": "saliency", "params": {"target": "no such class"}}, "invalid_params"),
    ({"kind": "saliency", "params": {"target": 1000}}, "invalid_params"),
    ({"kind": "gradcam", "params": {"layer": "nope"}}, "invalid_params"),
    ({"kind": "deconvnet", "params": {"layer": "_relu1", "channel": 5000}}, "invalid_params"),
    ({"kind": "deconvnet", "params": {"layer": "_relu1"}}, "validation_error"),
    ({"kind": "deconvnet", "params": {"layer": "_relu1", "channel": 1, "position": [7, 0]}}, "invalid_params"),
    ({"kind": "saliency", "params": {"bogus": 1}}, "validation_error"),
    ({"kind": "no_such_kind"}, "validation_error"),
])
def test_bad_params_are_refused_before_queueing(jobs_client, cat_png, spec, code):
    before = jobs_client.get("/v1/jobs?limit=500").json()["jobs"]
    body = {"model": MODEL, "image": {"data": __import__("base64").b64encode(cat_png).decode()}, **spec}
    response = jobs_client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert len(jobs_client.get("/v1/jobs?limit=500").json()["jobs"]) == len(before)


def test_unknown_ids_and_models_are_404(jobs_client, cat_png):
    for path in ("/v1/jobs/0123456789abcdef", "/v1/jobs/x/artifacts/input.npy", "/v1/jobs/x/events"):
        response = jobs_client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
    assert jobs_client.delete("/v1/jobs/x").status_code == 404
    response = jobs_client.post("/v1/jobs", json={"kind": "saliency", "model": "nope", "image": {"id": "abc"}})
    assert response.status_code == 404


def test_identical_spec_is_answered_from_the_cache(jobs_client, cat_png):
    first = submit(jobs_client, "deconvnet", cat_png, {"layer": "_blocks.3._relu1", "channel": 1}, wait=30).json()
    assert first["status"] == "finished" and not first["cached"]
    response = submit(jobs_client, "deconvnet", cat_png, {"layer": "_blocks.3._relu1", "channel": 1})
    again = response.json()
    assert response.status_code == 200 and again["cached"] is True and again["id"] != first["id"]
    assert again["result"]["metrics"] == first["result"]["metrics"]
    a = jobs_client.get(f"/v1/jobs/{first['id']}/artifacts/attribution.npy").content
    b = jobs_client.get(f"/v1/jobs/{again['id']}/artifacts/attribution.npy").content
    assert a == b
    other = submit(jobs_client, "deconvnet", cat_png, {"layer": "_blocks.3._relu1", "channel": 2}).json()
    assert other["cached"] is False


def test_events_stream_progress_then_one_end(jobs_client, job_settings, cat_png):
    job = submit(jobs_client, "smoothgrad", cat_png, {"samples": 24, "seed": 5}).json()
    with jobs_client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = read_events(stream)
    names = [e["event"] for e in events]
    assert names[-1] == "end" and names.count("end") == 1 and "progress" in names
    assert events[-1]["data"]["status"] == "finished" and events[-1]["data"]["id"] == job["id"]
    last_progress = [e["data"] for e in events if e["event"] == "progress"][-1]
    # the gradients, then the scores: ROAD's 90 imputed copies and deletion/insertion's 65
    batch = job_settings.occlusion_batch
    steps = -(-24 // job_settings.attribution_batch) + -(-90 // batch) + -(-65 // batch)
    assert last_progress == {"step": steps, "total": steps}


def test_list_newest_first_with_filters(jobs_client, cat_png):
    made = [submit(jobs_client, "gradcam", encode(sample("astronaut")[i * 10:]), wait=30).json()["id"] for i in range(3)]
    listed = [j["id"] for j in jobs_client.get("/v1/jobs?kind=gradcam&limit=500").json()["jobs"]]
    assert listed[:3] == made[::-1]
    finished = jobs_client.get("/v1/jobs?status=finished&limit=500").json()["jobs"]
    assert finished and all(j["status"] == "finished" for j in finished)
    assert jobs_client.get("/v1/jobs?kind=nope").status_code == 422
    assert jobs_client.get("/v1/jobs?status=nope").status_code == 422


def test_cancel_a_running_job_and_a_queued_one(jobs_client, cat_png):
    long = [submit(jobs_client, "integrated_gradients", encode(sample("coffee")[i:]), {"steps": 2000}).json()
            for i in range(3)]  # two workers: two run, one waits
    running = [wait_for(jobs_client, j["id"], ("started",)) for j in long[:2]]
    assert jobs_client.get(f"/v1/jobs/{running[0]['id']}/artifacts/input.npy").status_code == 409
    queued = jobs_client.get(f"/v1/jobs/{long[2]['id']}").json()
    assert queued["status"] == "queued"
    response = jobs_client.delete(f"/v1/jobs/{queued['id']}")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    for job in running:
        response = jobs_client.delete(f"/v1/jobs/{job['id']}")
        assert response.status_code == 202 and response.json()["status"] == "started"
    started = time.monotonic()
    ended = [wait_for(jobs_client, job["id"], timeout=20) for job in running]
    assert all(j["status"] == "canceled" for j in ended) and time.monotonic() - started < 10
    assert all(0 < j["progress"]["step"] < j["progress"]["total"] for j in ended)
    assert jobs_client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "canceled"
    assert jobs_client.delete(f"/v1/jobs/{queued['id']}").status_code == 200  # idempotent


def test_twenty_jobs_from_four_clients_all_finish_correctly(jobs_client, lite0_cpu):
    photos = [sample(name) for name in ("chelsea", "astronaut", "coffee", "rocket", "cat")]
    inputs = [encode(np.ascontiguousarray(photos[i % 5][(i // 5) * 12:])) for i in range(20)]
    results: dict[int, dict] = {}

    def client_thread(indices):
        for i in indices:
            results[i] = submit(jobs_client, "saliency", inputs[i], {"target": i}).json()

    threads = [threading.Thread(target=client_thread, args=(range(k, 20, 4),)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20
    for i, submitted in results.items():
        job = wait_for(jobs_client, submitted["id"], timeout=120)
        assert job["status"] == "finished", job
        assert job["result"]["metrics"]["target"] == i
        x = torch.from_numpy(npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/input.npy").content)).requires_grad_()
        lite0_cpu(x)[0, i].backward()
        got = npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/attribution.npy").content)
        np.testing.assert_allclose(got, x.grad[0].numpy(), rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def lite0_cpu(torch_lite0):
    """The built-in torch model run with the worker's thread count, so sums are taken in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch_lite0
    torch.set_num_threads(threads)


def test_metrics_show_queue_depth_and_job_durations(jobs_client, cat_png):
    submit(jobs_client, "gradcam", encode(sample("rocket")), wait=30)
    time.sleep(2.5)  # one monitor pass reads the ended-jobs stream
    text = jobs_client.get("/metrics").text
    assert "convscope_queue_depth" in text
    assert 'convscope_job_seconds_count{kind="gradcam"}' in text


def test_jobs_belong_to_the_key_that_made_them(job_settings, cat_png):
    """With API keys, another key gets 404 for a job and does not see it in its list."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings = job_settings.model_copy(update={"api_keys": "alice:key-a,bob:key-b",
                                               "job_queue": f"{job_settings.job_queue}-keys"})
    alice, bob = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"kind": "saliency", "model": MODEL, "image": {"data": __import__("base64").b64encode(cat_png).decode()}}
        assert client.post("/v1/jobs", json=body).status_code == 401
        job = client.post("/v1/jobs", json=body, headers=alice).json()
        assert client.get(f"/v1/jobs/{job['id']}", headers=alice).status_code == 200
        assert client.get(f"/v1/jobs/{job['id']}", headers=bob).status_code == 404
        assert client.delete(f"/v1/jobs/{job['id']}", headers=bob).status_code == 404
        assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["jobs"]] == [job["id"]]
        assert client.get("/v1/jobs", headers=bob).json()["jobs"] == []
        assert client.delete(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == "canceled"
