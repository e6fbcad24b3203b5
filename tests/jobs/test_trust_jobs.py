"""The trust kinds as jobs, end to end (real app, real worker processes, real Redis): an attribution job's
deletion/insertion scores equal a one-copy-at-a-time reference on the built-in model's ONNX Runtime
session; rise, kernel_shap, sanity_check and compare return what the API promises."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from core import preprocessing
from core.settings import Settings
from models.forward import softmax
from models.runtimes import Runtimes
from tests.jobs.conftest import artifact, finished, submit, wait_for


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@pytest.fixture(scope="module")
def classify(builtin_store, builtin):
    rt = Runtimes(builtin_store, Settings()).get(builtin)
    return lambda x: softmax(rt.logits(x))


def test_an_attribution_job_is_scored_as_a_reference_scores_its_map(jobs_client, cat_png, builtin, classify):
    job = finished(jobs_client, submit(jobs_client, "saliency", cat_png, {"evaluation_steps": 12,
                                                                          "deletion_baseline": "mean"}))
    # the gradient, then ROAD's 2 × 9 × (1 + 4) imputed copies (32 a batch), then deletion/insertion's 25
    assert job["progress"] == {"step": 1 + 3 + 1, "total": 5}
    x = npy(artifact(jobs_client, job, "input.npy"))
    attribution = npy(artifact(jobs_client, job, "attribution.npy"))
    table = json.loads(artifact(jobs_client, job, "evaluation.json"))
    metrics = job["result"]["metrics"]
    target = metrics["target"]
    assert table["target"] == target and table["steps"] == 12 and table["passes"] == 25
    # one perturbed copy per forward pass: the most positive channel sums first, ties in raster order
    order = np.argsort(-attribution.sum(axis=0).ravel(), kind="stable")
    ys, xs = np.unravel_index(order, x.shape[2:])
    blurred = preprocessing.fill_value(x, "blur", builtin)
    mean = x.mean(axis=(2, 3), keepdims=True)[0]
    deletion, insertion = [], []
    for k in range(13):
        n = k * 224 * 224 // 12
        removed, added = x[0].copy(), blurred[0].copy()
        removed[:, ys[:n], xs[:n]] = np.broadcast_to(mean, x[0].shape)[:, ys[:n], xs[:n]]
        added[:, ys[:n], xs[:n]] = x[0][:, ys[:n], xs[:n]]
        deletion.append(classify(removed[None])[0, target])
        insertion.append(classify(added[None])[0, target])
    np.testing.assert_allclose(table["deletion"], deletion, atol=1e-5, rtol=0)
    np.testing.assert_allclose(table["insertion"], insertion, atol=1e-5, rtol=0)
    assert metrics["deletion_auc"] == pytest.approx(np.trapezoid(deletion, dx=1 / 12), abs=1e-5)
    assert metrics["insertion_auc"] == pytest.approx(np.trapezoid(insertion, dx=1 / 12), abs=1e-5)
    # ROAD first: the ranking map a person sees (|saliency| summed over channels), its curves and random control
    ranking = npy(artifact(jobs_client, job, "ranking.npy"))
    np.testing.assert_allclose(ranking, np.abs(attribution).sum(axis=0), rtol=1e-6)
    assert table["ranking"] == "ranking.npy" and table["road"]["fractions"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert len(table["road"]["morf"]) == len(table["road"]["lerf"]) == 9 and table["road"]["noise"] == 0.01
    assert metrics["road_score"] == table["road"]["score"] == pytest.approx(
        np.mean(np.subtract(table["road"]["lerf"], table["road"]["morf"])) / 2)
    control = table["road"]["random"]
    assert control["maps"] == 4 and control["grain"] == [224, 224] and len(control["scores"]) == 4
    assert metrics["road_random_mean"] == control["mean"] and metrics["road_random_sd"] == control["sd"]
    assert metrics["beats_random"] == (metrics["road_score"] > control["mean"] + 2 * control["sd"])


def test_the_map_is_readable_while_its_scores_are_computed(jobs_client, cat_png):
    """Map first: `attribution.npy`, `heatmap.png` and `ranking.npy` are announced by `artifact` events and served
    while the job still runs (its scores take longer than the map: 16 random maps); other files stay 409."""
    job = submit(jobs_client, "gradcam", cat_png, {"road_random_maps": 16}).json()
    seen = {}
    with jobs_client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and '"url"' in line and '"attribution.npy"' in line and not seen:
                event = json.loads(line[6:])
                assert event == {"name": "attribution.npy", "media_type": "application/x-npy",
                                 "url": f"/v1/jobs/{job['id']}/artifacts/attribution.npy"}
                seen["map"] = jobs_client.get(event["url"])
                seen["heatmap"] = jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/heatmap.png")
                seen["scores"] = jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/evaluation.json")
                seen["status"] = jobs_client.get(f"/v1/jobs/{job['id']}").json()["status"]
            if line.startswith("event: end"):
                break
    assert seen["status"] == "started", "the job ended before its map was read: the test proves nothing"
    assert seen["map"].status_code == 200 and npy(seen["map"].content).shape == (1, 7, 7)
    assert seen["heatmap"].status_code == 200 and seen["heatmap"].content[:4] == b"\x89PNG"
    assert seen["scores"].status_code == 409
    ready = seen["scores"].json()["error"]["details"]["ready"]
    assert {"attribution.npy", "heatmap.png", "ranking.npy"} <= set(ready)
    done = wait_for(jobs_client, job["id"])
    assert done["status"] == "finished" and done["result"]["metrics"]["road_random_sd"] is not None
    assert npy(artifact(jobs_client, done, "attribution.npy")).tobytes() == npy(seen["map"].content).tobytes()
    assert len(json.loads(artifact(jobs_client, done, "evaluation.json"))["road"]["random"]["scores"]) == 16


def test_evaluate_false_leaves_the_map_unscored(jobs_client, cat_png):
    job = finished(jobs_client, submit(jobs_client, "gradcam", cat_png, {"evaluate": False}))
    assert "deletion_auc" not in job["result"]["metrics"] and "road_score" not in job["result"]["metrics"]
    assert job["progress"]["total"] == 1
    names = {a["name"] for a in job["result"]["artifacts"]}
    assert "evaluation.json" not in names and "ranking.npy" in names


def test_rise_and_kernel_shap_jobs_run_on_onnx_runtime(jobs_client, cat_png):
    rise = finished(jobs_client, submit(jobs_client, "rise", cat_png, {"masks": 96, "evaluation_steps": 8}))
    assert rise["params"]["cell"] == 28 and rise["params"]["p_keep"] == 0.5  # defaults filled in
    assert rise["progress"] == {"step": 3 + 3 + 1, "total": 7}  # 96 masks, ROAD's 90 copies, then 17, 32 a batch
    assert json.loads(artifact(jobs_client, rise, "evaluation.json"))["road"]["random"]["grain"] == [8, 8]  # cells
    shap = finished(jobs_client, submit(jobs_client, "kernel_shap", cat_png, {"samples": 64, "segments": 20}))
    names = {a["name"] for a in shap["result"]["artifacts"]}
    assert names == {"input.npy", "attribution.npy", "heatmap.png", "evaluation.json", "segments.npy", "ranking.npy"}
    assert json.loads(artifact(jobs_client, shap, "evaluation.json"))["road"]["random"]["grain"] == "superpixels"
    segments = npy(artifact(jobs_client, shap, "segments.npy"))
    attribution = npy(artifact(jobs_client, shap, "attribution.npy"))
    assert segments.shape == (224, 224) and attribution.shape == (1, 224, 224)
    assert len(np.unique(segments)) == shap["result"]["metrics"]["segments"]
    for job in (rise, shap):
        metrics = job["result"]["metrics"]
        assert metrics["target_label"] == "tiger cat" and 0 <= metrics["deletion_auc"] <= 1
        assert 0 <= metrics["insertion_auc"] <= 1


def test_sanity_check_job_shows_saliency_losing_similarity(jobs_client, cat_png):
    job = finished(jobs_client, submit(jobs_client, "sanity_check", cat_png, {"method": "saliency"}))
    assert job["params"]["method_params"] == {"seed": 0}  # saliency's only own param: the seed of its scores
    rows = json.loads(artifact(jobs_client, job, "similarity.json"))
    assert len(rows) == 16 and {"layer", "spearman", "ssim"} <= set(rows[0])
    assert job["result"]["metrics"]["final_spearman"] == rows[-1]["spearman"] < 0.3
    assert artifact(jobs_client, job, "cascade.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert job["progress"] == {"step": 17, "total": 17}


def test_compare_job_ranks_the_methods(jobs_client, cat_png):
    params = {"methods": ["saliency", "gradcam", "rise"], "evaluation_steps": 8,
              "method_params": {"rise": {"masks": 64}}}
    job = finished(jobs_client, submit(jobs_client, "compare", cat_png, params))
    assert job["params"]["method_params"]["gradcam"] == {"layer": "_relu1", "seed": 0}
    ranking = json.loads(artifact(jobs_client, job, "ranking.json"))
    assert [row["rank"] for row in ranking] == [1, 2, 3]
    assert {row["method"] for row in ranking} == {"saliency", "gradcam", "rise"}
    assert all({"method", "road_score", "road_random_mean", "road_random_sd", "beats_random", "deletion_auc",
                "insertion_auc", "seconds"} <= set(row) for row in ranking)
    assert [row["road_score"] for row in ranking] == sorted((row["road_score"] for row in ranking), reverse=True)
    assert job["result"]["metrics"]["best"] == ranking[0]["method"]
    assert artifact(jobs_client, job, "panel.png")[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("params, code", [
    ({"kind": "sanity_check", "params": {"method_params": {"target": 3}}}, "validation_error"),
    ({"kind": "sanity_check", "params": {"method": "gradcam", "method_params": {"layer": "nope"}}}, "invalid_params"),
    ({"kind": "compare", "params": {"methods": []}}, "validation_error"),
    ({"kind": "rise", "params": {"p_keep": 1.0}}, "validation_error"),
    ({"kind": "kernel_shap", "params": {"target": "no such class"}}, "invalid_params"),
])
def test_bad_trust_params_are_refused_before_queueing(jobs_client, cat_png, params, code):
    response = jobs_client.post("/v1/jobs", files={"image": ("c.png", cat_png, "image/png")},
                                data={"spec": json.dumps({"model": "efficientnet-lite0", **params})})
    assert response.status_code == 422 and response.json()["error"]["code"] == code, response.text
