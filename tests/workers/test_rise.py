"""RISE (Petsiuk et al. 2018) against a reference written here with the same masks, one masked image per
forward pass; the masks' own properties; seeding and progress."""

from __future__ import annotations

import numpy as np
import pytest

from core.kinds.registry import KINDS
from core.methods import ForwardTask
from workers.methods.attribution import rise


def params(record, **raw):
    return KINDS["rise"].params(**raw).resolve(record)


@pytest.mark.parametrize("raw, batch", [({"masks": 45, "cell": 5, "p_keep": 0.4, "seed": 3}, 7),
                                        ({"masks": 20, "cell": 16, "baseline": "black", "target": 2}, 32)])
def test_rise_equals_the_reference_with_the_same_masks(small_net, small_photo, small_classify, raw, batch):
    record, x = small_net.record, small_photo.numpy()
    p = params(record, **raw)
    calls = []
    out = rise.run(ForwardTask(record, p, x, small_classify, lambda step, total: calls.append((step, total)),
                               batch=batch))
    target = out.metrics["target"]
    assert target == (int(small_classify(x)[0].argmax()) if p.target is None else p.target)
    masks = np.concatenate(list(rise.mask_batches(p.masks, p.cell, p.p_keep, p.seed, 16, 16, batch=p.masks)))
    assert masks.shape == (p.masks, 16, 16)
    pre = record.preprocess
    if p.baseline == "black":
        fill = ((0 - np.array(pre.mean)) / np.array(pre.std)).astype(np.float32)[None, :, None, None]
    else:
        fill = np.zeros_like(x)
    expected = np.zeros((16, 16))
    for mask in masks:  # one masked copy at a time: S = Σ p_i M_i / (N · p_keep)
        copy = x * mask + fill * (1 - mask)
        expected += float(small_classify(copy.astype(np.float32))[0, target]) * mask
    expected /= p.masks * p.p_keep
    assert out.attribution.shape == (1, 16, 16) and out.attribution.dtype == np.float32
    np.testing.assert_allclose(out.attribution[0], expected, rtol=1e-5, atol=1e-6)
    assert out.heat.min() == 0 and out.heat.max() == pytest.approx(1)
    steps = -(-p.masks // batch)
    assert calls == [(k, steps) for k in range(1, steps + 1)]


def test_masks_are_soft_binary_grids_kept_with_p_keep_and_seeded():
    masks = np.concatenate(list(rise.mask_batches(600, 4, 0.3, 11, 24, 20, batch=64)))
    assert masks.shape == (600, 24, 20) and masks.min() >= 0 and masks.max() <= 1
    assert masks.mean() == pytest.approx(0.3, abs=0.02)
    for axis in (1, 2):  # bilinear between cells 4 px apart: at most 1/4 from one pixel to the next
        assert np.abs(np.diff(masks, axis=axis)).max() <= 0.25 + 1e-6
    again = np.concatenate(list(rise.mask_batches(600, 4, 0.3, 11, 24, 20, batch=7)))
    np.testing.assert_array_equal(masks, again)  # batching does not change the masks
    other = next(rise.mask_batches(600, 4, 0.3, 12, 24, 20, batch=64))
    assert not np.array_equal(masks[:64], other)
    shifts = {tuple(np.argwhere(np.abs(np.diff(m, axis=0)).sum(axis=1) > 0)[:1].ravel()) for m in masks[:50]}
    assert len(shifts) > 1  # randomly shifted, not all cut at the same rows


def test_rise_is_seeded(small_net, small_photo, small_classify):
    record, x = small_net.record, small_photo.numpy()

    def run(seed):
        return rise.run(ForwardTask(record, params(record, masks=30, cell=4, seed=seed), x, small_classify, batch=8))

    np.testing.assert_array_equal(run(1).attribution, run(1).attribution)
    assert not np.array_equal(run(1).attribution, run(2).attribution)
