"""The dataset kinds against independent references: brute force in torch, receptive fields from
gradients, a query that is in the dataset, a channel forced dead. Methods run on ONNX Runtime through
the real dataset feed (files in a temporary data dir) and return typed `Output`s (how those become
files: tests/workers/test_artifacts.py)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core import images
from core.methods import Output, no_progress
from core.settings import Settings
from core.stores.datasets import DatasetStore, Upload
from tests.conftest import encode, sample

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel", "camera", "coins", "moon", "page"]
TINY_SIZE = 64


def photo_files() -> list[tuple[str, bytes]]:
    """12 sample photos, shrunk (long side 160 px), every other one mirrored and cropped."""
    files = []
    for n, name in enumerate(PHOTOS):
        image = Image.fromarray(sample(name))
        image.thumbnail((160, 160))
        if n % 2:
            image = image.transpose(Image.FLIP_LEFT_RIGHT).crop((8, 4, image.width, image.height))
        files.append((f"{name}.png", encode(np.asarray(image))))
    return files


class TinyNet(nn.Module):
    """conv3 → ReLU → conv3/2 → ReLU → avgpool2 → conv3 → ReLU (the layer under test) → mean → linear.
    Receptive field of the last ReLU: size 15, stride 4, start −6. Channel `dead` can never fire."""

    def __init__(self, dead: int | None = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1, self.relu1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv3, self.relu3 = nn.Conv2d(8, 5, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(5, 4)
        with torch.no_grad():
            self.conv3.bias.add_(0.1)
            if dead is not None:
                self.conv3.weight[dead] = 0.0
                self.conv3.bias[dead] = -1.0

    def features(self, x):
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.relu3(self.conv3(x))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def export(net: nn.Module) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), torch.zeros(1, 3, TINY_SIZE, TINY_SIZE), out, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          opset_version=17, dynamo=False)
    return out.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(torch net, model store, record, name of the last ReLU layer) for a tiny net registered in a tmp store."""
    from core.model_record import Preprocess
    from core.stores.models import ModelStore
    from models.register import register

    net = TinyNet().eval()
    store = ModelStore(tmp_path_factory.mktemp("tiny-store"))
    record = register(store, export(net), model_id="tiny", name="tiny", source="upload", preprocess=Preprocess())
    layer = next(lay for lay in record.layers if lay.op == "Relu" and lay.shape == [5, 16, 16])
    return net, store, record, layer.name


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings(data_dir=tmp_path_factory.mktemp("data"), dataset_batch=5, ort_intra_threads=1)


@pytest.fixture(scope="module")
def dataset(settings):
    uploads = [Upload(name, io.BytesIO(data), len(data), archive=False) for name, data in photo_files()]
    created, rejected = DatasetStore(settings.data_dir, settings.dataset_ttl_s).create(uploads, None, settings)
    assert created.count == 12 and not rejected
    return created


def task_for(settings, store, record, dataset, kind: str, progress=None, image: bytes | None = None, **params):
    from core import images
    from core.kinds.registry import KINDS
    from core.methods import DatasetTask
    from workers.dataset_feed import open_feed

    resolved = KINDS[kind].params(**params).resolve(record)
    feed = open_feed(settings, store, record, dataset.id, None, progress or no_progress)
    query = None if image is None else images.prepare(image, record, max_bytes=settings.max_image_bytes,
                                                      max_pixels=settings.max_image_pixels)
    return DatasetTask(record, resolved, feed, query)


def model_inputs(dataset, record) -> torch.Tensor:
    xs = [images.to_tensor(images.fit(images.decode(dataset.read(i), max_bytes=1 << 30, max_pixels=1 << 30),
                                      record), record) for i in range(dataset.count)]
    return torch.from_numpy(np.concatenate(xs))


def brute_force_top(maps: np.ndarray, channel: int, k: int) -> list[tuple[int, int, int]]:
    """(image, y, x) of the k images with the largest spatial maximum: sort everything, no heap."""
    n, _, _, w = maps.shape
    flat = maps[:, channel].reshape(n, -1)
    best = [(-float(flat[i].max()), i, int(flat[i].argmax())) for i in range(n)]
    return [(i, *divmod(p, w)) for _, i, p in sorted(best)[:k]]


def is_picture(pixels: np.ndarray, channels: int = 3) -> bool:
    return pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == channels


def top_of(task) -> list[dict]:
    from workers.methods import top_activations

    out = top_activations.run(task)
    assert isinstance(out, Output) and set(out.tables) == {"top"} and set(out.pictures) == {"patches"}
    assert is_picture(out.pictures["patches"]) and not out.arrays
    return out.tables["top"]


def test_tiny_top_activations_equal_brute_force_for_every_channel_in_one_pass(settings, tiny, dataset):
    net, store, record, layer = tiny
    calls = []
    entries = top_of(task_for(settings, store, record, dataset, "top_activations",
                              progress=lambda step, total: calls.append((step, total)), layer=layer, k=4))
    with torch.no_grad():
        maps = net.features(model_inputs(dataset, record)).numpy()
    for channel in range(5):
        got = [e for e in entries if e["channel"] == channel]
        assert [(e["image_index"], *e["position"]) for e in got] == brute_force_top(maps, channel, 4)
        assert [e["activation"] for e in got] == pytest.approx(
            [float(maps[e["image_index"], channel, e["position"][0], e["position"][1]]) for e in got], abs=1e-5)
        assert all(e["name"] == dataset.entries[e["image_index"]].name for e in got)
    forward_steps = [c for c in calls if c[1] == calls[0][1]]
    assert forward_steps[0] == (0, calls[0][1]) and [s for s, _ in forward_steps][1:4] == [1, 2, 3]  # 12 images / 5


def test_builtin_top_activations_equal_brute_force(settings, builtin_store, builtin, dataset, torch_lite0):
    layer = "_blocks.5._relu1"
    entries = top_of(task_for(settings, builtin_store, builtin, dataset, "top_activations", layer=layer, channel=7,
                              k=5))
    captured = {}
    hook = torch_lite0.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.update(out=o))
    try:
        with torch.no_grad():
            torch_lite0(model_inputs(dataset, builtin))
    finally:
        hook.remove()
    maps = captured["out"].numpy()
    assert [(e["image_index"], *e["position"]) for e in entries] == brute_force_top(maps, 7, 5)
    assert all(e["channel"] == 7 for e in entries)


def gradient_boxes(positions) -> dict[tuple[int, int], list[int]]:
    """[x0, y0, x1, y1] of the input pixels each unit (y, x) depends on: the non-zero support of its
    gradient in a copy of the net with every weight 1, no bias and no rectifier."""
    probe = TinyNet(dead=None)
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
    probe.relu1 = probe.relu2 = probe.relu3 = nn.Identity()
    inp = torch.ones(1, 3, TINY_SIZE, TINY_SIZE, requires_grad=True)
    out = probe.features(inp)
    boxes = {}
    for y, x in positions:
        (grad,) = torch.autograd.grad(out[0, 0, y, x], inp, retain_graph=True)
        rows, cols = np.nonzero(grad[0].abs().sum(dim=0).numpy())
        boxes[y, x] = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
    return boxes


def test_every_patch_box_is_the_receptive_field_found_by_gradients(settings, tiny, dataset):
    _, store, record, layer = tiny
    rf = record.layer(layer).receptive_field
    assert (rf.size, rf.stride, rf.start) == (15, 4, -6)
    entries = top_of(task_for(settings, store, record, dataset, "top_activations", layer=layer, k=12))
    positions = {tuple(e["position"]) for e in entries} | {(0, 0), (15, 15), (0, 15), (7, 3)}
    boxes = gradient_boxes(positions)
    for e in entries:
        assert e["box"] == boxes[tuple(e["position"])]
    from workers.methods.top_activations import receptive_box

    for (y, x), box in boxes.items():
        assert receptive_box(rf, y, x, TINY_SIZE, TINY_SIZE) == box


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_has_one_point_per_image(settings, builtin_store, builtin, dataset, torch_lite0, method):
    from workers.methods import embedding

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
    from workers.methods.embedding import grid_cells

    placed = {tuple(cell): i for i, cell in enumerate(grid_cells(xy, 4, 3).tolist())}
    thumbs = [np.asarray(images.fit(images.decode(dataset.read(i), max_bytes=1 << 30, max_pixels=1 << 30), builtin)
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
    from workers.methods.embedding import grid_cells

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
    from workers.methods import neighbors

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
        fitted = images.fit(images.decode(pixels, max_bytes=1 << 30, max_pixels=1 << 30), builtin)
        return np.asarray(fitted.resize((128, 128), Image.BILINEAR), float)

    tiles = [strip[6:134, 6:134]] + [strip[6:134, 146 + n * 134:146 + n * 134 + 128] for n in range(4)]
    expected = [seen(query)] + [seen(dataset.read(f["image_index"])) for f in found]
    for n, (tile, thumb) in enumerate(zip(tiles, expected)):
        assert np.abs(tile.astype(float) - thumb).mean() <= 3, n
    assert out.arrays["input"].shape == (1, 3, 224, 224) and out.arrays["input"].dtype == np.float32
    assert np.array_equal(out.arrays["input"], images.to_tensor(images.fit(images.decode(
        query, max_bytes=1 << 30, max_pixels=1 << 30), builtin), builtin))


def test_a_channel_forced_dead_is_reported_dead(settings, tiny, dataset):
    from workers.methods import unit_stats

    net, store, record, layer = tiny
    out = unit_stats.run(task_for(settings, store, record, dataset, "unit_stats", layer=layer))
    units = out.tables["units"]
    assert [u["channel"] for u in units] == list(range(5))
    assert units[2]["dead"] and units[2]["fraction_zero"] == 1.0 and units[2]["mean"] == 0.0
    assert [u["channel"] for u in units if u["dead"]] == [2] == out.metrics["dead_channels"]
    with torch.no_grad():
        maps = net.features(model_inputs(dataset, record)).numpy()
    assert [u["mean"] for u in units] == pytest.approx(maps.mean(axis=(0, 2, 3)).tolist(), abs=1e-5)
    expected_zero = (maps.reshape(12, 5, -1).max(axis=2) <= 0).mean(axis=0)
    assert [u["fraction_zero"] for u in units] == pytest.approx(expected_zero.tolist())
    chart = out.pictures["units"]
    assert is_picture(chart, channels=4) and chart.shape[1] >= 800 and chart.shape[0] >= 600


def test_cancelling_between_batches_stops_the_pass_and_its_decoder(settings, tiny, dataset):
    import threading

    from workers.methods import unit_stats

    _, store, record, layer = tiny

    class Stop(Exception):
        pass

    def progress(step, total):
        if step >= 2:
            raise Stop

    with pytest.raises(Stop):
        unit_stats.run(task_for(settings, store, record, dataset, "unit_stats", progress=progress, layer=layer))
    for thread in threading.enumerate():
        if thread.name == "dataset-decode":
            thread.join(timeout=5)
            assert not thread.is_alive()

