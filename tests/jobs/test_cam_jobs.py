"""The CAM family as jobs: real app, real worker, real Redis. The forward-only CAMs run on the worker's ONNX
Runtime sessions (the graph cut after the layer, and for Ablation-CAM the graph cut before it) and give the map
the method gives on the same sessions called directly; the gradient CAMs run on the torch network."""

from __future__ import annotations

import io

import numpy as np
import pytest

from core import images, preprocessing
from core.kinds.registry import KINDS
from core.methods import ForwardTask
from core.settings import Settings
from models.runtimes import Runtimes
from tests.jobs.conftest import submit, wait_for
from workers.methods import method_of

FORWARD = ["eigencam", "scorecam", "ablationcam"]
GRADIENT = ["gradcam_plus_plus", "xgradcam", "layercam", "hirescam"]


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def small_layer(record) -> str:
    return next(layer.name for layer in record.layers if layer.shape[0] <= 40)


@pytest.mark.parametrize("kind", FORWARD + GRADIENT)
def test_a_cam_job_finishes_with_its_map(jobs_client, cat_png, builtin, builtin_store, kind):
    layer = small_layer(builtin) if kind in FORWARD else None
    params = {"evaluate": False, **({"layer": layer} if layer else {})}
    job = wait_for(jobs_client, submit(jobs_client, kind, cat_png, params).json()["id"], timeout=180)
    assert job["status"] == "finished", job["error"]
    layer = job["params"]["layer"]
    shape = builtin.layer(layer).shape
    names = {a["name"] for a in job["result"]["artifacts"]}
    assert names == {"input.npy", "attribution.npy", "heatmap.png", "ranking.npy"}
    attribution = npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/attribution.npy").content)
    assert attribution.shape == (1, *shape[1:]) and attribution.min() >= 0 and attribution.max() > 0
    assert job["result"]["metrics"]["layer"] == layer and job["progress"]["step"] == job["progress"]["total"]
    if kind in FORWARD:
        x = preprocessing.to_tensor(preprocessing.fit(images.decode(cat_png, max_bytes=10**8, max_pixels=10**8),
                                                      builtin), builtin)
        resolved = KINDS[kind].params(**params).resolve(builtin)
        direct = method_of(KINDS[kind])(ForwardTask(builtin, resolved, x, classify=None, batch=16,
                                                    model=Runtimes(builtin_store, Settings()).get(builtin)))
        np.testing.assert_allclose(attribution, direct.attribution, rtol=1e-4, atol=1e-4 * float(direct.attribution.max()))


def test_eigencam_has_no_target_but_its_scores_follow_one(jobs_client, cat_png, builtin):
    layer = small_layer(builtin)
    maps = []
    for target in (281, 1):
        job = wait_for(jobs_client, submit(jobs_client, "eigencam", cat_png, {
            "layer": layer, "target": target, "road_fractions": [0.5], "road_random_maps": 0,
            "evaluation_steps": 4}).json()["id"], timeout=180)
        assert job["status"] == "finished", job["error"]
        assert job["result"]["metrics"]["target"] == target and "road_score" in job["result"]["metrics"]
        maps.append(npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/attribution.npy").content))
    np.testing.assert_array_equal(maps[0], maps[1])
