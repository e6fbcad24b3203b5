"""Kernel SHAP over superpixels against captum's `KernelShap` (same feature mask, baseline and sampled
coalitions) and, with every coalition of ≤ 10 superpixels, against exact Shapley values computed here."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from captum.attr import KernelShap

from core.kinds.registry import KINDS
from core.methods import ForwardTask
from core.preprocessing import from_tensor
from workers.methods.attribution import kernel_shap


def params(record, **raw):
    return KINDS["kernel_shap"].params(**raw).resolve(record)


def labels_of(x: np.ndarray, record, segments: int) -> np.ndarray:
    return kernel_shap.superpixels(from_tensor(x[0], record), segments, 10.0)


def test_kernel_shap_equals_captum_with_the_same_coalitions(small_net, small_photo, small_classify):
    record, x = small_net.record, small_photo.numpy()
    labels = labels_of(x, record, 12)
    m = int(labels.max()) + 1
    assert 8 <= m <= 16
    target = 3
    seen: list[np.ndarray] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.numpy().copy())
        return torch.from_numpy(small_classify(batch.numpy()))

    torch.manual_seed(5)
    expected = KernelShap(forward).attribute(small_photo.clone(), baselines=0.0, target=target,
                                             feature_mask=torch.from_numpy(labels)[None, None], n_samples=120,
                                             perturbations_per_eval=1)[0]
    # captum's coalitions, read back from the copies it classified: a superpixel is in when it is the image's
    copies = np.concatenate(seen)
    kept = np.stack([[np.array_equal(c[:, labels == j], x[0][:, labels == j]) for j in range(m)] for c in copies])
    assert kept.shape == (120, m) and kept[0].all() and not kept[1].any()  # captum: the full, then the empty one
    middle, counts = np.unique(kept[2:], axis=0, return_counts=True)
    z = np.concatenate([kept[:2], middle])
    phi, y = kernel_shap.shapley(x, np.zeros_like(x), labels, z, np.concatenate([[1.0, 1.0], counts]), target,
                                 small_classify, batch=16)
    captum_phi = np.array([float(expected[0, labels == j].mean()) for j in range(m)])
    np.testing.assert_allclose(phi, captum_phi, rtol=1e-5, atol=1e-7)
    assert phi.sum() == pytest.approx(y[0] - y[1], abs=1e-7)  # efficiency, exactly (captum: nearly)


def exact_shapley(x, labels, target, classify) -> np.ndarray:
    """φ_i = Σ_{S ⊆ N∖{i}} |S|! (M − |S| − 1)! / M! · (f(S ∪ {i}) − f(S)), f by one forward pass per subset."""
    m = int(labels.max()) + 1
    value = {}
    for size in range(m + 1):
        for subset in combinations(range(m), size):
            keep = np.isin(labels, subset)[None, None]
            value[frozenset(subset)] = float(classify(np.where(keep, x, 0).astype(np.float32))[0, target])
    phi = np.zeros(m)
    for i in range(m):
        for subset, f in value.items():
            if i not in subset:
                s = len(subset)
                phi[i] += math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) * (value[subset | {i}] - f)
    return phi


def test_every_coalition_gives_the_exact_shapley_values(small_net, small_photo, small_classify):
    record, x = small_net.record, small_photo.numpy()
    p = params(record, segments=8, samples=5000, target=1)
    out = kernel_shap.run(ForwardTask(record, p, x, small_classify, batch=64))
    labels = out.arrays["segments"].astype(int)
    m = out.metrics["segments"]
    assert 4 <= m <= 10 and out.metrics["exact"] and out.metrics["coalitions"] == 2 ** m
    np.testing.assert_array_equal(labels, labels_of(x, record, 8))
    phi = exact_shapley(x, labels, 1, small_classify)
    painted = out.attribution[0]
    for j in range(m):
        np.testing.assert_allclose(painted[labels == j], phi[j], rtol=1e-5, atol=1e-7)


def test_sampled_values_keep_efficiency_paint_superpixels_and_are_seeded(small_net, small_photo, small_classify):
    record, x = small_net.record, small_photo.numpy()
    calls = []

    def run(seed, progress=lambda step, total: None):
        return kernel_shap.run(ForwardTask(record, params(record, segments=20, samples=90, seed=seed), x, small_classify,
                                           progress, batch=16))

    out = run(4, lambda step, total: calls.append((step, total)))
    labels = out.arrays["segments"].astype(int)
    m = out.metrics["segments"]
    assert m >= 8 and not out.metrics["exact"] and out.metrics["coalitions"] <= 90  # repeats are run once
    phi = np.array([out.attribution[0][labels == j][0] for j in range(m)])
    assert all(np.all(out.attribution[0][labels == j] == phi[j]) for j in range(m))
    assert phi.sum() == pytest.approx(out.metrics["target_probability"] - out.metrics["empty_probability"], abs=1e-6)
    assert calls[-1] == (6, 6) and all(total == 6 for _, total in calls)  # 90 coalitions, 16 a batch
    np.testing.assert_array_equal(run(4).attribution, out.attribution)
    assert not np.array_equal(run(5).attribution, out.attribution)


def test_coalitions_are_drawn_with_the_shapley_kernel():
    m, samples = 16, 40_000  # 2^16 coalitions: more than the samples, so they are drawn
    z, weights, exact = kernel_shap.coalitions(m, samples, seed=0)
    assert not exact and z[0].all() and not z[1].any() and weights[:2].tolist() == [1, 1]
    assert weights.sum() == samples  # every draw counted once
    sizes = z[2:].sum(axis=1)
    k = np.arange(1, m)
    kernel = (m - 1) / (k * (m - k))
    drawn = np.array([weights[2:][sizes == size].sum() for size in k]) / (samples - 2)
    np.testing.assert_allclose(drawn, kernel / kernel.sum(), atol=0.01)
    ones = (z[2:] * weights[2:, None]).sum(axis=0) / weights[2:].sum()
    assert ones.max() - ones.min() < 0.02  # no superpixel favoured
