"""Forward views on ONNX Runtime: predictions, layer activations and occlusion sensitivity.

The views run on a model's `models.runtimes.ModelRuntime` (its sessions, batched in the API) with the exact model
input (N×C×H×W float32, made by `core.preprocessing`); probabilities are the softmax of the logits, in [0, 1].
"""

from __future__ import annotations

import numpy as np

from core.errors import Invalid
from core.preprocessing import fill_value
from models.runtimes import ModelRuntime


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(rt: ModelRuntime, x: np.ndarray, top_k: int) -> list[dict]:
    """Top-k classes: index, label, softmax probability and raw logit."""
    logits = rt.logits(x)[0]
    probs = softmax(logits)
    order = np.argsort(-logits, kind="stable")[:top_k]
    return [{"index": int(i), "label": rt.record.label(int(i)), "probability": float(probs[i]),
             "logit": float(logits[i])} for i in order]


def activation_stats(maps: np.ndarray) -> dict:
    """Per-channel max, mean and fraction of exact zeros; a channel is dead when it never exceeds 0."""
    flat = maps.reshape(maps.shape[0], -1)
    peak = flat.max(axis=1)
    return {
        "max": peak.tolist(),
        "mean": flat.mean(axis=1).tolist(),
        "fraction_zero": (flat == 0).mean(axis=1).tolist(),
        "dead_channels": np.flatnonzero(peak <= 0).tolist(),
    }


def occlusion_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top/left edges of patches along one axis: 0, stride, ... up to the last that fits."""
    return list(range(0, size - patch + 1, stride))


def occlusion(rt: ModelRuntime, x: np.ndarray, target: int, patch: int, stride: int, fill: str | float,
              batch: int) -> tuple[np.ndarray, float, int]:
    """Zeiler & Fergus (2014) occlusion: the target's probability with each patch covered.

    Returns (map of shape rows×cols, unoccluded probability, number of forward passes). The
    occluded copies go through ONNX Runtime `batch` at a time.
    """
    _, _, height, width = x.shape
    if patch > min(height, width):
        raise Invalid(f"patch {patch} px is larger than the model input ({height}×{width})", code="patch_too_large")
    ys, xs = occlusion_positions(height, patch, stride), occlusion_positions(width, patch, stride)
    if len(ys) * len(xs) > rt.settings.max_occlusion_positions:
        raise Invalid(f"{len(ys) * len(xs)} patch positions; the limit is {rt.settings.max_occlusion_positions}"
                      " (raise stride or patch)", code="too_many_positions")
    baseline = float(softmax(rt.logits(x))[0, target])
    cover = fill_value(x, fill, rt.record)
    positions = [(y, x0) for y in ys for x0 in xs]
    probs = np.empty(len(positions), np.float32)
    for start in range(0, len(positions), batch):
        chunk = positions[start:start + batch]
        copies = np.repeat(x, len(chunk), axis=0)
        for i, (y, x0) in enumerate(chunk):
            copies[i, :, y:y + patch, x0:x0 + patch] = cover[0, :, y:y + patch, x0:x0 + patch]
        probs[start:start + len(chunk)] = softmax(rt.logits(copies))[:, target]
    return probs.reshape(len(ys), len(xs)), baseline, len(positions) + 1


def occlusion_heat(prob_map: np.ndarray, baseline: float, size: tuple[int, int], patch: int, stride: int) -> np.ndarray:
    """Per input pixel, the mean drop in probability over the patches that covered it, in [0, 1]."""
    height, width = size
    total = np.zeros((height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    for r, y in enumerate(occlusion_positions(height, patch, stride)):
        for c, x0 in enumerate(occlusion_positions(width, patch, stride)):
            total[y:y + patch, x0:x0 + patch] += baseline - prob_map[r, c]
            count[y:y + patch, x0:x0 + patch] += 1
    drop = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    peak = np.abs(drop).max()
    return np.clip(drop / peak, 0, 1) if peak > 0 else drop
