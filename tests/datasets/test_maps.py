"""Embedding maps and nearest neighbours against independent references: sklearn's PCA, the grid the
points ask for, a query that is in the dataset. Methods run on ONNX Runtime through the real dataset feed."""


from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core import images, preprocessing
from tests.datasets.conftest import is_picture, model_inputs, task_for


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_embedding_has_one_point_per_image(settings, builtin_store, builtin, dataset, torch_lite0, method):
    from workers.methods.dataset import embedding

    out = embedding.run(task_for(settings, builtin_store, builtin, dataset, "embedding", method=method))
    points = out.tables["points"]
    assert sorted(p["image_index"] for p in points) == list(range(12))
    xy = np.array([[p["x"], p["y"]] for p in sorted(points, key=lambda p: p["image_index"])])
    np.testing.assert_array_equal(xy.min(axis=0), [0, 0])  # each axis scaled to [0, 1]
    np.testing.assert_array_equal(xy.max(axis=0), [1, 1])
    assert len({(round(p["x"], 6), round(p["y"], 6)) for p in points}) == 12
    if method == "pca":  # the top two principal components of the codes (global-average-pooled last layer)
        from sklearn.decomposition import PCA

        codes = last_layer_codes(torch_lite0, builtin, dataset)
        reference = PCA(n_components=2).fit_transform(codes.astype(np.float64))
        reference = (reference - reference.min(axis=0)) / np.ptp(reference, axis=0)
        for axis in range(2):  # a principal axis has no sign: either orientation is the same map
            assert min(np.abs(xy[:, axis] - reference[:, axis]).max(),
                       np.abs(xy[:, axis] - (1 - reference[:, axis])).max()) <= 1e-3, axis
    picture = out.pictures["map"]
    assert is_picture(picture) and picture.shape[:2] == (3 * 128, 4 * 128)
    # each of the 4×3 cells holds the thumbnail (what the model saw, 128 px) of the image whose point
    # `grid_cells` (tested below) assigns to it
    from workers.methods.dataset.embedding import grid_cells

    placed = {tuple(cell): i for i, cell in enumerate(grid_cells(xy, 4, 3).tolist())}
    thumbs = [np.asarray(preprocessing.fit(images.decode(dataset.read(i), max_bytes=1 << 30, max_pixels=1 << 30), builtin)
                         .resize((128, 128), Image.BILINEAR), float) for i in range(12)]
    shown = []
    for row in range(3):
        for col in range(4):
            cell = picture[row * 128:(row + 1) * 128, col * 128:(col + 1) * 128].astype(float)
            differences = [np.abs(cell - thumb).mean() for thumb in thumbs]
            assert min(differences) <= 3, (row, col, differences)
            shown.append(int(np.argmin(differences)))
            assert shown[-1] == placed[row, col], (row, col, differences)
    assert sorted(shown) == list(range(12))
    assert out.metrics["code_size"] == builtin.layers[-1].shape[0]


def last_layer_codes(torch_lite0, record, dataset) -> np.ndarray:
    """N×C: the torch model's last spatial layer, averaged over positions, for every image of `dataset`."""
    captured = {}
    hook = torch_lite0.get_submodule(record.layers[-1].name).register_forward_hook(
        lambda m, i, o: captured.update(out=o))
    try:
        with torch.no_grad():
            torch_lite0(model_inputs(dataset, record))
    finally:
        hook.remove()
    return captured["out"].mean(dim=(2, 3)).numpy()


def test_umap_without_the_package_is_refused_with_a_clear_message(builtin, monkeypatch):
    from core.kinds import dataset as kinds

    monkeypatch.setattr(kinds, "umap_available", lambda: False)
    with pytest.raises(ValueError, match="umap-learn"):
        kinds.EmbeddingParams(method="umap").resolve(builtin)


def test_grid_cells_are_distinct_and_follow_the_points():
    from workers.methods.dataset.embedding import grid_cells

    rng = np.random.default_rng(0)
    for n in (7, 40):
        points = rng.random((n, 2))
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        cells = grid_cells(points, cols, rows)
        assert len({tuple(c) for c in cells}) == n
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (x, y)
    assert grid_cells(corners, 2, 2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_an_image_of_the_dataset_is_its_own_nearest_neighbour(settings, builtin_store, builtin, dataset, metric):
    from workers.methods.dataset import neighbors

    query = dataset.read(3)
    out = neighbors.run(task_for(settings, builtin_store, builtin, dataset, "neighbors", image=query,
                                 metric=metric, k=4))
    found = out.tables["neighbors"]
    assert found[0]["image_index"] == 3 and found[0]["distance"] == pytest.approx(0.0, abs=1e-4)
    assert found[0]["name"] == dataset.entries[3].name
    assert len(found) == 4 and [f["distance"] for f in found] == sorted(f["distance"] for f in found)
    assert found[1]["distance"] > 1e-3
    strip = out.pictures["neighbors"]  # the query, a wider gap, then the neighbours nearest first: 128 px tiles
    assert is_picture(strip) and strip.shape[:2] == (128 + 2 * 6, 128 + 3 * 6 + 4 * (128 + 6))

    def seen(pixels: bytes) -> np.ndarray:  # what the model saw, as a 128-px tile
        fitted = preprocessing.fit(images.decode(pixels, max_bytes=1 << 30, max_pixels=1 << 30), builtin)
        return np.asarray(fitted.resize((128, 128), Image.BILINEAR), float)

    tiles = [strip[6:134, 6:134]] + [strip[6:134, 146 + n * 134:146 + n * 134 + 128] for n in range(4)]
    expected = [seen(query)] + [seen(dataset.read(f["image_index"])) for f in found]
    for n, (tile, thumb) in enumerate(zip(tiles, expected)):
        assert np.abs(tile.astype(float) - thumb).mean() <= 3, n
    assert out.arrays["input"].shape == (1, 3, 224, 224) and out.arrays["input"].dtype == np.float32
    assert np.array_equal(out.arrays["input"], preprocessing.to_tensor(preprocessing.fit(images.decode(
        query, max_bytes=1 << 30, max_pixels=1 << 30), builtin), builtin))
