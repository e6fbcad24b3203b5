"""Kernel SHAP (Lundberg & Lee, NeurIPS 2017) over SLIC superpixels (Achanta et al., TPAMI 2012).

The image the model sees is cut into M superpixels (scikit-image's `slic`). A coalition z ∈ {0, 1}^M keeps
the superpixels it holds and replaces the others by the baseline (model-input space); f(z) is the target's
softmax probability on that copy. Coalitions are drawn with the Shapley kernel: a size k ∈ 1 … M − 1 with
probability ∝ (M − 1) / (k (M − k)), then k superpixels uniformly; the empty and the full coalition are
always evaluated (they count towards `samples`, as captum's `n_samples`). When every coalition fits in
`samples`, all 2^M are used with the kernel weights π(z) = (M − 1) / (C(M, k) k (M − k)) and the result is
the exact Shapley values.

The values φ solve the weighted least squares f(z) ≈ φ₀ + z·φ with the two end points as exact
constraints (φ₀ = f(∅), Σφ = f(full) − f(∅)), one variable eliminated as in the SHAP package; drawn
coalitions weigh 1 each (the kernel is in the sampling), repeated ones are evaluated once and weigh their
count. Units: probability. Forward passes only, `batch` copies per `classify` call; seeded.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
from skimage.segmentation import slic

from core.methods import Attribution, Classify, ForwardTask, Progress, no_progress
from core.preprocessing import from_tensor
from workers.methods.mechanics.deletion_insertion import fill


def superpixels(rgb: np.ndarray, segments: int, compactness: float) -> np.ndarray:
    """H×W int labels 0 … M − 1 of SLIC superpixels of an H×W×3 uint8 image (M about `segments`)."""
    labels = slic(rgb, n_segments=segments, compactness=compactness, start_label=0, channel_axis=-1)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def coalitions(features: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(Z: n×M bool, weights: n, exact): the full and the empty coalition first, then the others, distinct,
    weighted by how often they were drawn, or, when 2^M ≤ samples, every coalition with its kernel weight."""
    m = features
    ends = np.array([[True] * m, [False] * m])
    if m < 63 and 2 ** m <= samples:
        middle = np.array([z for z in product([False, True], repeat=m) if 0 < sum(z) < m], bool).reshape(-1, m)
        sizes = middle.sum(axis=1)
        weights = (m - 1) / (np.array([math.comb(m, k) for k in sizes]) * sizes * (m - sizes))
        return np.concatenate([ends, middle]), np.concatenate([[1.0, 1.0], weights]), True
    rng = np.random.default_rng(seed)
    k = np.arange(1, m)
    sizes = rng.choice(k, size=samples - 2, p=(m - 1) / (k * (m - k)) / ((m - 1) / (k * (m - k))).sum())
    order = np.argsort(rng.random((samples - 2, m)), axis=1)
    drawn = np.zeros((samples - 2, m), bool)
    np.put_along_axis(drawn, order, np.arange(m)[None] < sizes[:, None], axis=1)
    middle, counts = np.unique(drawn, axis=0, return_counts=True)
    return np.concatenate([ends, middle]), np.concatenate([[1.0, 1.0], counts.astype(np.float64)]), False


def solve(z: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """φ (M,) from coalitions z (n×M, rows 0 and 1 the full and the empty one), outputs y and weights."""
    m = z.shape[1]
    base, gain = y[1], y[0] - y[1]
    if m == 1:
        return np.array([gain])
    rows, out, w = z[2:].astype(np.float64), y[2:], np.sqrt(weights[2:])
    design = (rows[:, :-1] - rows[:, -1:]) * w[:, None]
    target = (out - base - rows[:, -1] * gain) * w
    head = np.linalg.lstsq(design, target, rcond=None)[0]
    return np.append(head, gain - head.sum())


def evaluate(x: np.ndarray, base: np.ndarray, labels: np.ndarray, z: np.ndarray, target: int, classify: Classify,
             batch: int, progress: Progress = no_progress, steps: int | None = None) -> np.ndarray:
    """f(z) for every coalition: the target's probability on x with the superpixels outside z set to `base`."""
    y = np.empty(len(z), np.float64)
    steps = steps or -(-len(z) // batch)
    for step, start in enumerate(range(0, len(z), batch), 1):
        keep = z[start:start + batch][:, labels][:, None]  # b×1×H×W
        y[start:start + len(keep)] = classify(np.where(keep, x, base).astype(np.float32))[:, target]
        progress(min(step, steps), steps)
    return y


def shapley(x: np.ndarray, base: np.ndarray, labels: np.ndarray, z: np.ndarray, weights: np.ndarray, target: int,
            classify: Classify, batch: int, progress: Progress = no_progress,
            steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(φ, f(z)) for given coalitions (rows 0 and 1: full, empty) and weights."""
    y = evaluate(x, base, labels, z, target, classify, batch, progress, steps)
    return solve(z, y, weights), y


def run(task: ForwardTask) -> Attribution:
    """attribution: 1×H×W, each superpixel's φ painted over it (probability units); heat: the positive part
    over its maximum (what raises the target's probability); `segments.npy`: the labels."""
    p, record, x = task.params, task.record, task.x
    probs = task.classify(x)[0]
    target = int(probs.argmax()) if p.target is None else record.class_index(p.target)
    labels = superpixels(from_tensor(x[0], record), p.segments, p.compactness)
    z, weights, exact = coalitions(int(labels.max()) + 1, p.samples, p.seed)
    steps = -(-p.samples // task.batch)
    phi, y = shapley(x, fill(x, p.baseline, record), labels, z, weights, target, task.classify, task.batch,
                     task.progress, steps)
    task.progress(steps, steps)
    painted = phi[labels].astype(np.float32)
    peak = float(painted.max())
    heat = np.clip(painted / peak, 0, 1) if peak > 0 else np.zeros_like(painted)
    metrics = {"target": target, "target_label": record.label(target), "target_probability": float(y[0]),
               "empty_probability": float(y[1]), "segments": int(z.shape[1]), "coalitions": int(len(z)),
               "exact": exact}
    return Attribution(painted[None], heat, metrics, arrays={"segments": labels.astype(np.float32)})
