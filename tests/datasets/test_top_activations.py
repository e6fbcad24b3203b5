"""Top activations and unit statistics against independent references: brute force in torch, receptive
fields from gradients, a channel forced dead; cancelling between batches. Methods run on ONNX Runtime
through the real dataset feed and return typed `Output`s (files: tests/workers/test_artifacts.py)."""


from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.datasets.conftest import TINY_SIZE, TinyNet, brute_force_top, is_picture, model_inputs, task_for, top_of


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
        assert e["input_box"] == boxes[tuple(e["position"])]
    from workers.methods.dataset.top_activations import receptive_box

    for (y, x), box in boxes.items():
        assert receptive_box(rf, y, x, TINY_SIZE, TINY_SIZE) == box


@pytest.fixture(scope="module")
def odd_dataset(settings):
    """A 199×203 photo and three of the shared ones (smaller, other shapes)."""
    import io

    from PIL import Image

    from core.stores.datasets import DatasetStore, Upload
    from tests.conftest import encode, sample
    from tests.datasets.conftest import photo_files

    odd = encode(np.asarray(Image.fromarray(sample("astronaut")).resize((199, 203), Image.BICUBIC)))
    files = [("odd.png", odd), *photo_files()[1:4]]
    uploads = [Upload(name, io.BytesIO(data), len(data), archive=False) for name, data in files]
    created, _ = DatasetStore(settings.data_dir, settings.dataset_ttl_s).create(uploads, None, settings)
    assert (created.entries[0].width, created.entries[0].height) == (199, 203)
    return created


def box_by_hand(input_box, width: int, height: int, resize: int | None) -> list[int]:
    """The inverse of torchvision's Resize(resize) + CenterCrop(64) (or of a plain resize to 64×64 when `resize`
    is None), written out: input x → (x + left) · width / resized width; starts floored, ends ceiled, clipped."""
    import math
    from fractions import Fraction

    if resize is None:
        new_w, new_h, left, top = TINY_SIZE, TINY_SIZE, 0, 0
    else:
        short, long = min(width, height), max(width, height)
        new_w, new_h = (resize, int(resize * long / short)) if width <= height else (int(resize * long / short), resize)
        left, top = int(round((new_w - TINY_SIZE) / 2.0)), int(round((new_h - TINY_SIZE) / 2.0))
    x0, y0, x1, y1 = input_box
    fx, fy = Fraction(width, new_w), Fraction(height, new_h)
    return [max(math.floor((x0 + left) * fx), 0), max(math.floor((y0 + top) * fy), 0),
            min(math.ceil((x1 + left) * fx), width), min(math.ceil((y1 + top) * fy), height)]


@pytest.mark.parametrize("resize", [None, 72])
def test_boxes_are_in_each_dataset_images_own_pixels(settings, tiny, odd_dataset, resize):
    """`box` is the receptive field in the dataset image's own pixels (inside the image, the hand-computed inverse
    of the resize and centre crop of `input_box`); the patches in `patches.png` are still cut at `input_box`."""
    from core import images, preprocessing
    from core.model_record import Preprocess
    from workers.methods.dataset import top_activations
    from workers.methods.dataset.top_activations import Layout, letterbox, receptive_box

    _, store, record, layer = tiny
    record = record.model_copy(update={"preprocess": Preprocess(resize=resize, crop=TINY_SIZE if resize else True)})
    dataset = odd_dataset
    out = top_activations.run(task_for(settings, store, record, dataset, "top_activations", layer=layer, channel=1,
                                       k=4))
    entries = out.tables["top"]
    assert sorted(e["image_index"] for e in entries) == [0, 1, 2, 3]  # the 199×203 photo among them
    rf = record.layer(layer).receptive_field
    layout = Layout(1, 4)
    for rank, e in enumerate(entries):
        entry = dataset.entries[e["image_index"]]
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= entry.width and 0 <= y0 < y1 <= entry.height
        assert e["input_box"] == receptive_box(rf, *e["position"], TINY_SIZE, TINY_SIZE)
        assert e["box"] == box_by_hand(e["input_box"], entry.width, entry.height, resize)
        fitted = np.asarray(preprocessing.fit(images.decode(dataset.read(entry.index), max_bytes=1 << 30,
                                                     max_pixels=1 << 30), record))
        ix0, iy0, ix1, iy1 = e["input_box"]
        y, x = layout.origin(0, rank)
        tile = out.pictures["patches"][y:y + layout.tile, x:x + layout.tile]
        np.testing.assert_array_equal(tile, letterbox(fitted[iy0:iy1, ix0:ix1], layout.tile))


def test_a_channel_forced_dead_is_reported_dead(settings, tiny, dataset):
    from workers.methods.dataset import unit_stats

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

    from workers.methods.dataset import unit_stats

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
