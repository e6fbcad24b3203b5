"""RISE, Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018).

N random binary grids of cells `cell` px wide (each cell kept with probability p_keep) are upsampled
bilinearly to one cell more than the input and cropped at a random shift of 0 … cell − 1 px, giving soft
masks M_i in [0, 1] (H×W). Each masked copy x ⊙ M_i + b ⊙ (1 − M_i) (b: the baseline, model-input space)
is classified, and the map is

    S = Σ_i p_i M_i / (N · p_keep),   p_i the target's softmax probability on copy i (probability units).

Forward passes only, `batch` copies per `classify` call; masks from a generator seeded with `seed`, made a
batch at a time (2,000 masks at 224 px would be 400 MB at once).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from core.methods import Attribution, ForwardTask
from workers.methods.mechanics.deletion_insertion import fill


def mask_batches(count: int, cell: int, p_keep: float, seed: int, height: int, width: int,
                 batch: int) -> Iterator[np.ndarray]:
    """The masks, `batch` at a time, each b×H×W float32 in [0, 1]; the same arguments give the same masks."""
    rows, cols = -(-height // cell) + 1, -(-width // cell) + 1  # one cell more than covers the input, for the shift
    rng = np.random.default_rng(seed)
    grids = rng.random((count, rows, cols)) < p_keep
    shifts = rng.integers(0, cell, size=(count, 2))
    for start in range(0, count, batch):
        grid = torch.from_numpy(grids[start:start + batch].astype(np.float32))[:, None]
        up = F.interpolate(grid, size=(rows * cell, cols * cell), mode="bilinear", align_corners=False)[:, 0].numpy()
        yield np.stack([up[i, dy:dy + height, dx:dx + width]
                        for i, (dy, dx) in enumerate(shifts[start:start + batch])])


def saliency(x: np.ndarray, target: int, task: ForwardTask) -> np.ndarray:
    """S (H×W float32) for `target`: Σ p_i M_i / (N · p_keep), progress after each batch."""
    p = task.params
    _, _, height, width = x.shape
    base = fill(x, p.baseline, task.record)
    total = np.zeros((height, width), np.float64)
    steps = -(-p.masks // task.batch)
    for step, masks in enumerate(mask_batches(p.masks, p.cell, p.p_keep, p.seed, height, width, task.batch), 1):
        m = masks[:, None]
        probs = task.classify((x * m + base * (1 - m)).astype(np.float32))[:, target]
        total += np.tensordot(probs.astype(np.float64), masks, axes=1)
        task.progress(step, steps)
    return (total / (p.masks * p.p_keep)).astype(np.float32)


def run(task: ForwardTask) -> Attribution:
    """attribution: 1×H×W (probability units); heat: the map min–max scaled to [0, 1]."""
    record, x = task.record, task.x
    probs = task.classify(x)[0]
    target = int(probs.argmax()) if task.params.target is None else record.class_index(task.params.target)
    s = saliency(x, target, task)
    low, high = float(s.min()), float(s.max())
    heat = (s - low) / (high - low) if high > low else np.zeros_like(s)
    metrics = {"target": target, "target_label": record.label(target), "target_probability": float(probs[target]),
               "masks": task.params.masks}
    cells = (-(-x.shape[2] // task.params.cell), -(-x.shape[3] // task.params.cell))
    return Attribution(s[None], heat, metrics, grain=cells)
