"""Forward views checked against independent computations: torch at a layer, one-at-a-time occlusion."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from core import preprocessing
from models.forward import softmax
from tests.conftest import encode, sample

MODEL = "/v1/models/efficientnet-lite0"


def post(client, view: str, spec: dict, photo: str = "chelsea"):
    return client.post(f"{MODEL}/{view}", files={"image": ("x.png", encode(sample(photo)), "image/png")},
                       data={"spec": json.dumps(spec)})


def model_input(record, photo: str) -> np.ndarray:
    return preprocessing.to_tensor(preprocessing.fit(Image.fromarray(sample(photo)), record), record)


def torch_at(torch_lite0, record, layer: str, photo: str) -> np.ndarray:
    """C×H×W output of `layer` of the torch model for a sample photo (the independent reference)."""
    seen = {}
    handle = torch_lite0.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    try:
        with torch.no_grad():
            torch_lite0(torch.from_numpy(model_input(record, photo)))
    finally:
        handle.remove()
    return seen["out"][0].numpy()


def matplotlib_colours(values: np.ndarray, cmap: str) -> np.ndarray:
    """Values in [0, 1] → RGB 0–255 (float) by matplotlib's colour map."""
    import matplotlib

    return matplotlib.colormaps[cmap](np.asarray(values, np.float64))[..., :3] * 255


@pytest.mark.parametrize("layer", ["_relu0", "_blocks.2", "_blocks.5._relu1", "_blocks.11._bn1", "_relu1"])
def test_activations_equal_torch_at_the_layer(client, builtin, torch_lite0, layer):
    response = post(client, "activations", {"layer": layer, "format": "npy"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-npy"
    got = np.load(io.BytesIO(response.content), allow_pickle=False)
    expected = torch_at(torch_lite0, builtin, layer, "chelsea")
    assert got.shape == expected.shape == tuple(builtin.layer(layer).shape)
    assert np.abs(got - expected).max() <= 1e-3 * max(1.0, np.abs(expected).max())


def test_activation_stats_and_png(client, builtin, torch_lite0):
    layer = "_blocks.1._relu1"
    maps = torch_at(torch_lite0, builtin, layer, "chelsea")  # 96×56×56
    flat = maps.reshape(96, -1)
    stats = post(client, "activations", {"layer": layer, "format": "json"}).json()
    assert stats["shape"] == [96, 56, 56] and stats["channels"] == list(range(96))
    np.testing.assert_allclose(stats["stats"]["max"], flat.max(axis=1), atol=1e-3)
    np.testing.assert_allclose(stats["stats"]["mean"], flat.mean(axis=1), atol=1e-4)
    # exact zeros: a few pre-activations within rounding of 0 may fall either side between runtimes
    np.testing.assert_allclose(stats["stats"]["fraction_zero"], (flat == 0).mean(axis=1), atol=4 / flat.shape[1])
    dead = set(stats["stats"]["dead_channels"])
    assert all((m <= 0) == (c in dead) for c, m in enumerate(stats["stats"]["max"]))
    assert dead == set(np.flatnonzero(flat.max(axis=1) <= 0).tolist())

    channels = [5, 0, 9, 2]
    png = post(client, "activations", {"layer": layer, "channels": channels})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    grid = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB")).astype(float)
    assert grid.shape == (2 + 2 * (56 + 2), 2 + 2 * (56 + 2), 3)  # 2×2 tiles of 56 px, 2 px gaps
    for i, channel in enumerate(channels):  # row by row, each tile its channel scaled min→0, max→1 in inferno
        r, c = divmod(i, 2)
        tile = grid[2 + r * 58: 2 + r * 58 + 56, 2 + c * 58: 2 + c * 58 + 56]
        values = (maps[channel] - maps[channel].min()) / (maps[channel].max() - maps[channel].min())
        assert np.abs(tile - matplotlib_colours(values, "inferno")).max() <= 6, channel
        y, x = np.unravel_index(maps[channel].argmax(), maps[channel].shape)
        assert tile[y, x].tolist() == pytest.approx(matplotlib_colours([1.0], "inferno")[0], abs=1)
    gaps = np.ones(grid.shape[:2], bool)
    for r in range(2):
        for c in range(2):
            gaps[2 + r * 58: 2 + r * 58 + 56, 2 + c * 58: 2 + c * 58 + 56] = False
    assert (grid[gaps] == 32).all()


def test_accept_header_picks_the_format(client):
    response = client.post(f"{MODEL}/activations", headers={"Accept": "application/json"},
                           json={"image": {"data": __import__("base64").b64encode(encode(sample("coffee"))).decode()},
                                 "layer": "_relu1"})
    assert response.status_code == 200 and response.json()["shape"] == [1280, 7, 7]


def test_occlusion_equals_one_patch_at_a_time(client, builtin, builtin_store):
    patch, stride = 64, 40
    response = post(client, "occlusion", {"patch": patch, "stride": stride, "fill": "zero", "format": "json"})
    assert response.status_code == 200, response.text
    body = response.json()
    session = ort.InferenceSession(str(builtin_store.blob_path(builtin.onnx_sha256)), providers=["CPUExecutionProvider"])
    x = model_input(builtin, "chelsea")

    def prob(t):
        return float(softmax(session.run([builtin.logits_name], {builtin.input_name: t})[0])[0, body["target"]])

    starts = range(0, 224 - patch + 1, stride)
    reference = []
    for y in starts:
        row = []
        for x0 in starts:
            covered = x.copy()
            covered[:, :, y:y + patch, x0:x0 + patch] = 0.0
            row.append(prob(covered))
        reference.append(row)
    assert body["target"] == int(np.argmax(session.run([builtin.logits_name], {builtin.input_name: x})[0]))
    assert math.isclose(body["baseline_probability"], prob(x), abs_tol=1e-5)
    np.testing.assert_allclose(np.array(body["map"]), np.array(reference), atol=1e-4)


def test_occlusion_png_is_the_drop_over_the_image(client, builtin):
    """The PNG is the image the model saw, half covered by the jet colour of each pixel's drop in
    probability (the mean over the patches that covered it, scaled by the largest drop)."""
    spec = {"patch": 56, "stride": 56, "target": "tabby"}
    response = post(client, "occlusion", spec)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(float)
    assert picture.shape == (224, 224, 3)
    body = post(client, "occlusion", {**spec, "format": "json"}).json()
    drop = body["baseline_probability"] - np.array(body["map"])  # 4×4, patches do not overlap
    heat = np.clip(drop / np.abs(drop).max(), 0, 1).repeat(56, axis=0).repeat(56, axis=1)
    seen = np.asarray(preprocessing.fit(Image.fromarray(sample("chelsea")), builtin), float)
    expected = 0.5 * seen + 0.5 * matplotlib_colours(heat, "jet")
    assert np.abs(picture - expected).max() <= 3
    scaled = np.clip(drop / np.abs(drop).max(), 0, 1)
    assert scaled.max() > 0.2 and scaled.min() == 0  # the map is not flat: hot and cold blocks to tell apart
    for block in (np.unravel_index(drop.argmax(), drop.shape), np.unravel_index(drop.argmin(), drop.shape)):
        colour = (picture - 0.5 * seen)[block[0] * 56:(block[0] + 1) * 56, block[1] * 56:(block[1] + 1) * 56] / 0.5
        assert np.abs(colour - matplotlib_colours([scaled[block]], "jet")[0]).max() <= 6, (block, scaled)


def count_tiles(png: bytes, n_max: int) -> int:
    """Tiles in a `render.tile_grid` image: grid cells that are not plain background."""
    grid = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    cols = math.ceil(math.sqrt(n_max))
    rows = math.ceil(n_max / cols)
    cell_h, cell_w = (grid.shape[0] - 2) // rows, (grid.shape[1] - 2) // cols
    filled = 0
    for r in range(rows):
        for c in range(cols):
            cell = grid[2 + r * cell_h: (r + 1) * cell_h, 2 + c * cell_w: (c + 1) * cell_w]
            filled += bool((cell != 32).any())
    return filled


def test_first_layer_filters_one_colour_tile_per_filter(client):
    png = client.get(f"{MODEL}/layers/_bn0/filters")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert count_tiles(png.content, 32) == 32
    raw = np.load(io.BytesIO(client.get(f"{MODEL}/layers/_bn0/filters?format=npy").content))
    assert raw.shape == (32, 3, 3, 3)


def test_deeper_filters_one_grey_tile_per_input_slice(client):
    response = client.get(f"{MODEL}/layers/_blocks.1._bn0/filters", params={"max_filters": 2})
    assert response.status_code == 200
    assert count_tiles(response.content, 2 * 16) == 2 * 16  # 2 filters × 16 input channels (1×1)


def test_filters_of_a_non_convolution_is_422(client):
    response = client.get(f"{MODEL}/layers/_relu0/filters")
    assert response.status_code == 422 and response.json()["error"]["code"] == "not_a_convolution"
