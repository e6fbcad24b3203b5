"""Deletion and insertion scores of an attribution map (Petsiuk, Das & Saenko 2018, "RISE", section 4.1).

Pixels are ranked by the attribution summed over its channels, most positive first, ties in raster order
(a map coarser than the input, Grad-CAM's, is first resized to the input bilinearly). After step k of n,
the first ⌊k·HW/n⌋ pixels of that order (every channel) are changed:

    deletion    the image, those pixels replaced by a baseline (black by default)
    insertion   a blurred copy of the image (Gaussian, radius 1/16 of its size), those pixels put back

and the target's softmax probability is read at each of the n + 1 points of both curves (2n + 1 forward
passes: the unchanged image ends insertion and starts deletion). Each AUC is the trapezoidal area under
its curve over the fraction of pixels changed, in [0, 1] (probability units). A map that finds what the
model uses has a low deletion AUC (the probability falls at once) and a high insertion AUC.

Forward passes only, `batch` perturbed copies per `classify` call (the runner's runs on ONNX Runtime).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.methods import Classify, Progress, no_progress
from core.model_record import ModelRecord
from core.preprocessing import fill_value

FILLS = {"zeros": "zero", "black": 0.0, "mean": "mean", "blur": "blur"}  # param value → core.preprocessing.fill_value's


def pixel_order(attribution: np.ndarray, height: int, width: int) -> np.ndarray:
    """Flat pixel indices (into H×W), most attributed first: C×h×w summed over channels, resized to H×W
    bilinearly if it is coarser, sorted descending with ties in raster order."""
    score = np.asarray(attribution, np.float64).sum(axis=0).astype(np.float32)
    if score.shape != (height, width):
        score = np.asarray(Image.fromarray(score).resize((width, height), Image.BILINEAR), np.float32)
    return np.argsort(-score.ravel(), kind="stable")


def changed_counts(pixels: int, steps: int) -> np.ndarray:
    """Pixels changed after each step k = 0 … steps: ⌊k · pixels / steps⌋."""
    return np.arange(steps + 1, dtype=np.int64) * pixels // steps


def fill(x: np.ndarray, name: str, record: ModelRecord) -> np.ndarray:
    """A 1×C×H×W image of what `name` (zeros, black, mean, blur) puts in place of the image, model-input space."""
    return np.ascontiguousarray(fill_value(x, FILLS[name], record), dtype=np.float32)


def curves(x: np.ndarray, order: np.ndarray, target: int, classify: Classify, *, steps: int, deleted: np.ndarray,
           blurred: np.ndarray, batch: int, progress: Progress = no_progress) -> tuple[np.ndarray, np.ndarray, int]:
    """(deletion, insertion) probabilities of `target` at each of the steps + 1 points, and the forward passes.

    `x`: 1×C×H×W model input; `order`: flat pixel indices, most attributed first; `deleted`/`blurred`:
    1×C×H×W, what deleted pixels become and where insertion starts."""
    _, _, height, width = x.shape
    counts = changed_counts(height * width, steps)
    rank = np.empty(height * width, np.int64)
    rank[order] = np.arange(height * width)
    rank = rank.reshape(1, height, width)
    # copies: the unchanged image, deletion after steps 1 … n, insertion after steps 0 … n − 1
    plan = [("deletion", 0)] + [("deletion", k) for k in range(1, steps + 1)] + [("insertion", k) for k in range(steps)]
    probs = np.empty(len(plan), np.float64)
    chunks = range(0, len(plan), batch)
    for done, start in enumerate(chunks, 1):
        copies = np.empty((min(batch, len(plan) - start), *x.shape[1:]), np.float32)
        for i, (curve, k) in enumerate(plan[start:start + batch]):
            changed = rank < counts[k]
            copies[i] = np.where(changed, deleted[0], x[0]) if curve == "deletion" else np.where(changed, x[0], blurred[0])
        probs[start:start + len(copies)] = classify(copies)[:, target]
        progress(done, len(chunks))
    deletion = probs[:steps + 1]
    insertion = np.append(probs[steps + 1:], probs[0])
    return deletion, insertion, len(plan)


def auc(fractions: np.ndarray, probs: np.ndarray) -> float:
    """Trapezoidal area under probs over fractions in [0, 1]."""
    return float(np.trapezoid(probs, fractions))


def passes(steps: int) -> int:
    """Forward passes of both curves."""
    return 2 * steps + 1


def evaluate(x: np.ndarray, attribution: np.ndarray, target: int, classify: Classify, record: ModelRecord, *,
             steps: int, baseline: str = "black", batch: int = 32, progress: Progress = no_progress) -> dict:
    """The scores of one map: {target, steps, deletion_baseline, insertion_start, fraction, deletion,
    insertion, deletion_auc, insertion_auc, passes}, JSON-able (what `evaluation.json` holds)."""
    _, _, height, width = x.shape
    order = pixel_order(attribution, height, width)
    deletion, insertion, count = curves(x, order, target, classify, steps=steps, deleted=fill(x, baseline, record),
                                        blurred=fill(x, "blur", record), batch=batch, progress=progress)
    fractions = changed_counts(height * width, steps) / (height * width)
    return {"target": target, "steps": steps, "deletion_baseline": baseline, "insertion_start": "blur",
            "fraction": fractions.tolist(), "deletion": deletion.tolist(), "insertion": insertion.tolist(),
            "deletion_auc": auc(fractions, deletion), "insertion_auc": auc(fractions, insertion), "passes": count}
