"""`neuron_groups` and `caricature` as jobs: real workers, the real Redis, the built-in model. The groups' factors
are scikit-learn's NMF of the activations view's npy for the same image (the worker's ONNX Runtime against the
API's), and a caricature is closer to its photo than the photo's augmented copies (its own metrics)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import NMF

from tests.jobs.conftest import MODEL, artifact, finished, submit

LAYER = "_blocks.10._relu1"


def test_neuron_groups_job_factorises_the_activations_view(jobs_client, cat_png):
    job = finished(jobs_client, submit(jobs_client, "neuron_groups", cat_png,
                                       {"layer": LAYER, "groups": 5, "steps": 2, "size": 32}), timeout=240)
    assert job["params"]["groups"] == 5 and job["params"]["seed"] == 0 and job["progress"] == {"step": 6, "total": 6}
    names = {a["name"] for a in job["result"]["artifacts"]}
    assert {"groups.json", "groups.png", "maps.npy", "factors.npy", "input.npy"} | {f"group_{g}.png" for g in range(5)} <= names
    groups = json.loads(artifact(jobs_client, job, "groups.json"))
    factors = np.load(io.BytesIO(artifact(jobs_client, job, "factors.npy")))
    assert [g["group"] for g in groups] == list(range(5))
    assert sum(g["share"] for g in groups) == pytest.approx(job["result"]["metrics"]["explained"])
    assert Image.open(io.BytesIO(artifact(jobs_client, job, "groups.png"))).size == (224, 224)

    view = jobs_client.post(f"/v1/models/{MODEL}/activations", files={"image": ("cat.png", cat_png, "image/png")},
                            data={"spec": json.dumps({"layer": LAYER, "format": "npy"})})
    acts = np.load(io.BytesIO(view.content))
    oracle = NMF(n_components=5, init="nndsvd", random_state=0, max_iter=job["params"]["max_iter"])
    oracle.fit(np.maximum(acts.reshape(acts.shape[0], -1).T, 0))
    np.testing.assert_allclose(factors, oracle.components_, rtol=1e-3, atol=1e-3 * oracle.components_.max())


def test_caricature_job(jobs_client, cat_png):
    job = finished(jobs_client, submit(jobs_client, "caricature", cat_png, {"steps": 40, "size": 96}), timeout=240)
    metrics = job["result"]["metrics"]
    assert job["params"]["layer"] and metrics["cosine"] > metrics["augmented_cosine"]
    assert Image.open(io.BytesIO(artifact(jobs_client, job, "image.png"))).size == (96, 96)
    assert "input.npy" in {a["name"] for a in job["result"]["artifacts"]}


def test_bad_params_are_refused_before_queueing(jobs_client, cat_png):
    for kind, params in [("neuron_groups", {"layer": "nope"}), ("neuron_groups", {"groups": 0}),
                         ("caricature", {"size": 8}), ("caricature", {"layer": "nope"})]:
        answer = submit(jobs_client, kind, cat_png, params)
        assert answer.status_code == 422, (kind, params, answer.text)
