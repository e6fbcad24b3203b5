"""Class activation maps from forward passes only (ONNX Runtime): the pipeline the CAMs without gradients share,
with the one step each method changes. The layer's activations A (1×K×h×w) come from the graph cut after the
layer; `combine(task, A, target, logits)` makes the 1×h×w map, which is rectified (ReLU) and kept at the layer's
grid; the heat is the map over its maximum. They need no torch twin of the graph, so they work on any model with
class scores that ONNX Runtime runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.methods import Attribution, ForwardTask

Combine = Callable[[ForwardTask, np.ndarray, int, np.ndarray], np.ndarray]
"""combine(task, activations 1×K×h×w, target class, the image's logits K') → the 1×h×w map before its ReLU."""


def forward_cam(task: ForwardTask, combine: Combine) -> Attribution:
    """attribution: 1×h×w map (ReLU'd, unnormalised); heat: the map divided by its maximum."""
    record, layer, model = task.record, task.params.layer, task.model
    logits = model.logits(task.x)[0]
    target = int(logits.argmax()) if task.params.target is None else record.class_index(task.params.target)
    activations = model.layer(task.x, layer)
    cam = np.maximum(combine(task, activations, target, logits), 0).astype(np.float32)
    return layer_map(cam, {"target": target, "target_label": record.label(target),
                           "target_logit": float(logits[target]), "layer": layer})


def layer_map(cam: np.ndarray, metrics: dict) -> Attribution:
    """A rectified 1×h×w CAM as an attribution: heat = the map over its maximum; the grid joins the metrics. Every
    CAM, gradient or forward-only, ends here."""
    peak = float(cam.max())
    heat = cam[0] / peak if peak > 0 else cam[0]
    return Attribution(cam, heat, {**metrics, "grid": list(cam.shape[1:])})


def weighted_sum(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Σ_k w_k A_k: K weights, 1×K×h×w activations → 1×h×w."""
    return np.tensordot(weights.astype(np.float32), activations[0], axes=1)[None]


def channel_batches(channels: int, batch: int) -> list[range]:
    """The channels in runs of at most `batch`: one forward pass of the task's batch size each."""
    return [range(start, min(channels, start + batch)) for start in range(0, channels, batch)]
