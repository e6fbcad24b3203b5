"""Ablation-CAM (Desai & Ramaswamy 2020).

Each channel k of the layer is ablated (set to 0, or, where the layer has negative values, to its minimum − 1e7,
as pytorch-grad-cam does) and the rest of the graph run from the layer on: with y the target's logit and y_k that
logit without channel k, w_k = (y − y_k) / y and map = ReLU(Σ_k w_k A_k) at the layer's grid. K forward passes of
the graph after the layer only (cut before it, exact like the cut after it), `batch` ablated copies per call.
"""

from __future__ import annotations

import numpy as np

from core.methods import Attribution, ForwardTask
from workers.methods.mechanics.forward_cam import channel_batches, forward_cam, weighted_sum

ABLATION_OFFSET = 1e7


def ablation_weighted(task: ForwardTask, activations: np.ndarray, target: int, logits: np.ndarray) -> np.ndarray:
    lowest = float(activations.min())
    ablated_value = 0.0 if lowest == 0 else lowest - ABLATION_OFFSET
    runs = channel_batches(activations.shape[1], task.batch)
    ablated_logit = np.empty(activations.shape[1], np.float64)
    for step, channels in enumerate(runs, 1):
        copies = np.repeat(activations, len(channels), axis=0)
        copies[np.arange(len(channels)), np.asarray(channels)] = ablated_value
        ablated_logit[channels.start:channels.stop] = task.model.from_layer(task.params.layer, copies, task.x)[:, target]
        task.progress(step, len(runs))
    original = float(logits[target])
    return weighted_sum((original - ablated_logit) / original, activations)


def run(task: ForwardTask) -> Attribution:
    return forward_cam(task, ablation_weighted)
