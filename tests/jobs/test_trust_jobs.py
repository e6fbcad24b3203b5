"""The trust kinds as jobs, end to end (real app, real worker processes, real Redis): an attribution job's
deletion/insertion scores equal a one-copy-at-a-time reference on the built-in model's ONNX Runtime
session; rise, kernel_shap, sanity_check and compare return what the API promises."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from core import images
from core.settings import Settings
from models.forward import Runtimes, softmax
from tests.jobs.conftest import submit, wait_for


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def finished(client, response, timeout: float = 180) -> dict:
    assert response.status_code in (200, 202), response.text
    job = wait_for(client, response.json()["id"], timeout=timeout)
    assert job["status"] == "finished", job
    return job


def artifact(client, job: dict, name: str) -> bytes:
    response = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
    assert response.status_code == 200, response.text
    return response.content


@pytest.fixture(scope="module")
def classify(builtin_store, builtin):
    rt = Runtimes(builtin_store, Settings()).get(builtin)
    return lambda x: softmax(rt.logits(x))


def test_an_attribution_job_is_scored_as_a_reference_scores_its_map(jobs_client, cat_png, builtin, classify):
    job = finished(jobs_client, submit(jobs_client, "saliency", cat_png, {"evaluation_steps": 12,
                                                                          "deletion_baseline": "mean"}))
    assert job["progress"] == {"step": 2, "total": 2}  # the gradient, then 25 copies (32 a batch)
    x = npy(artifact(jobs_client, job, "input.npy"))
    attribution = npy(artifact(jobs_client, job, "attribution.npy"))
    table = json.loads(artifact(jobs_client, job, "evaluation.json"))
    metrics = job["result"]["metrics"]
    target = metrics["target"]
    assert table["target"] == target and table["steps"] == 12 and table["passes"] == 25
    # one perturbed copy per forward pass: the most positive channel sums first, ties in raster order
    order = np.argsort(-attribution.sum(axis=0).ravel(), kind="stable")
    ys, xs = np.unravel_index(order, x.shape[2:])
    blurred = images.fill_value(x, "blur", builtin)
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


def test_evaluate_false_leaves_the_map_unscored(jobs_client, cat_png):
    job = finished(jobs_client, submit(jobs_client, "gradcam", cat_png, {"evaluate": False}))
    assert "deletion_auc" not in job["result"]["metrics"] and job["progress"]["total"] == 1
    assert "evaluation.json" not in {a["name"] for a in job["result"]["artifacts"]}


def test_rise_and_kernel_shap_jobs_run_on_onnx_runtime(jobs_client, cat_png):
    rise = finished(jobs_client, submit(jobs_client, "rise", cat_png, {"masks": 96, "evaluation_steps": 8}))
    assert rise["params"]["cell"] == 28 and rise["params"]["p_keep"] == 0.5  # defaults filled in
    assert rise["progress"] == {"step": 3 + 1, "total": 4}  # 96 masks, then 17 copies, 32 a batch
    shap = finished(jobs_client, submit(jobs_client, "kernel_shap", cat_png, {"samples": 64, "segments": 20}))
    names = {a["name"] for a in shap["result"]["artifacts"]}
    assert names == {"input.npy", "attribution.npy", "heatmap.png", "evaluation.json", "segments.npy"}
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
    assert job["params"]["method_params"] == {}  # saliency has no params of its own
    rows = json.loads(artifact(jobs_client, job, "similarity.json"))
    assert len(rows) == 16 and {"layer", "spearman", "ssim"} <= set(rows[0])
    assert job["result"]["metrics"]["final_spearman"] == rows[-1]["spearman"] < 0.3
    assert artifact(jobs_client, job, "cascade.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert job["progress"] == {"step": 17, "total": 17}


def test_compare_job_ranks_the_methods(jobs_client, cat_png):
    params = {"methods": ["saliency", "gradcam", "rise"], "evaluation_steps": 8,
              "method_params": {"rise": {"masks": 64}}}
    job = finished(jobs_client, submit(jobs_client, "compare", cat_png, params))
    assert job["params"]["method_params"]["gradcam"] == {"layer": "_relu1"}
    ranking = json.loads(artifact(jobs_client, job, "ranking.json"))
    assert [row["rank"] for row in ranking] == [1, 2, 3]
    assert {row["method"] for row in ranking} == {"saliency", "gradcam", "rise"}
    assert all({"method", "deletion_auc", "insertion_auc", "seconds"} <= set(row) for row in ranking)
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
