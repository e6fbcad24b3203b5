"""`neuron_groups` on the built-in model: its factors are scikit-learn's NMF (init "nndsvd", the same seed) of the
layer's activations as the activations view gives them (npy), to 1e-3 relative; its shares sum to the explained
fraction, which is 1 − ‖A − WH‖² / ‖A‖² of that factorisation."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.decomposition import NMF

from core.kinds.atlas import NeuronGroupsParams
from models.runtimes import Runtimes
from tests.conftest import encode, sample
from tests.workers.test_image_making import image_input
from workers.methods.atlas import neuron_groups
from workers.methods.task import Task, TensorImage

FAST = {"steps": 3, "size": 32}


@pytest.fixture(scope="module")
def runtime(builtin, builtin_store, settings):
    return Runtimes(builtin_store, settings).get(builtin)


def view_activations(client, photo: str, layer: str) -> np.ndarray:
    """The layer's C×h×w activations from `POST /v1/models/{model}/activations` as npy."""
    answer = client.post("/v1/models/efficientnet-lite0/activations",
                         files={"image": ("photo.png", encode(sample(photo)), "image/png")},
                         data={"spec": json.dumps({"layer": layer, "format": "npy"})})
    assert answer.status_code == 200, answer.text
    return np.load(io.BytesIO(answer.content))


def run(network, runtime, photo: str, **params):
    resolved = NeuronGroupsParams(**FAST, **params).resolve(network.record)
    image = TensorImage.of(image_input(network.record, photo), "cpu")
    steps = []
    out = neuron_groups.run(Task(network=network, x=image.x, params=resolved, inputs={"image": image}, model=runtime,
                                 progress=lambda step, total: steps.append((step, total))))
    return resolved, out, steps


@pytest.mark.parametrize(("photo", "layer", "groups", "seed"), [("chelsea", "_blocks.10._relu1", 6, 0),
                                                                  ("coffee", "_blocks.5._relu0", 4, 7),
                                                                  ("astronaut", "_relu0", 3, 123)])
def test_factors_are_scikit_learns_nmf_of_the_activations_view(client, lite0, runtime, photo, layer, groups, seed):
    params, out, steps = run(lite0, runtime, photo, layer=layer, groups=groups, seed=seed)
    acts = view_activations(client, photo, layer)
    matrix = np.maximum(acts.reshape(acts.shape[0], -1).T, 0)
    oracle = NMF(n_components=groups, init="nndsvd", random_state=seed, max_iter=params.max_iter)
    maps = oracle.fit_transform(matrix)
    factors = oracle.components_
    np.testing.assert_allclose(out.arrays["factors"], factors, rtol=1e-3, atol=1e-3 * np.abs(factors).max())
    np.testing.assert_allclose(out.arrays["maps"], maps.T.reshape(groups, *acts.shape[1:]), rtol=1e-3,
                               atol=1e-3 * np.abs(maps).max())

    explained = 1 - ((matrix - maps @ factors) ** 2).sum() / (matrix ** 2).sum()
    table = out.tables["groups"]
    assert out.metrics["explained"] == pytest.approx(explained, rel=1e-3)
    assert sum(g["share"] for g in table) == pytest.approx(out.metrics["explained"], rel=1e-9)
    assert all(g["share"] >= 0 for g in table) and 0 < out.metrics["explained"] <= 1
    for g, entry in enumerate(table):
        weight = np.asarray(entry["weight"])
        assert entry["group"] == g and entry["image"] == f"group_{g}.png" and len(weight) == acts.shape[0]
        assert entry["channels"] == np.argsort(-weight, kind="stable")[:params.top_channels].tolist()
        assert out.pictures[f"group_{g}"].shape == (32, 32, 3)
    assert out.pictures["groups"].shape == (224, 224, 3)
    assert steps[-1] == (1 + groups, 1 + groups) == (params.total_steps(None),) * 2


def test_groups_png_is_tinted_where_the_groups_are(lite0, runtime):
    _, out, _ = run(lite0, runtime, "chelsea", layer="_blocks.10._relu1", groups=2)
    photo = image_input(lite0.record, "chelsea").fitted.astype(int)
    tinted = np.abs(out.pictures["groups"].astype(int) - photo).sum(axis=2)
    maps = out.arrays["maps"]
    strongest = np.unravel_index(maps.max(axis=0).argmax(), maps.shape[1:])
    weakest = np.unravel_index(maps.max(axis=0).argmin(), maps.shape[1:])
    cell = 224 // maps.shape[1]
    at = lambda yx: tinted[yx[0] * cell:(yx[0] + 1) * cell, yx[1] * cell:(yx[1] + 1) * cell].mean()  # noqa: E731
    assert at(strongest) > at(weakest)


def test_too_many_groups_for_the_layer_is_refused(builtin):
    with pytest.raises(ValueError, match="at most"):
        NeuronGroupsParams(layer="_blocks.2._relu1", groups=32).resolve(builtin.model_copy(update={"layers": [
            layer.model_copy(update={"shape": [16, 2, 2]}) if layer.name == "_blocks.2._relu1" else layer
            for layer in builtin.layers]}))
