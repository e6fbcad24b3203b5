"""Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu 2020).

Each channel A_k of the layer, upsampled bilinearly to the input (corners aligned) and scaled to [0, 1], masks
the model input: the target's logit on x ⊙ M_k is the channel's score s_k, and map = ReLU(Σ_k softmax(s)_k A_k)
at the layer's grid. K forward passes (one per channel), `batch` masked copies per ONNX Runtime call: what
pytorch-grad-cam's `ScoreCAM` computes, eps included.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from core.methods import Attribution, ForwardTask
from workers.methods.mechanics.forward_cam import channel_batches, forward_cam, weighted_sum

EPS = 1e-8


def channel_masks(activations: np.ndarray, height: int, width: int) -> np.ndarray:
    """K×H×W masks: each channel upsampled to the input and min–max scaled to [0, 1]."""
    up = F.interpolate(torch.from_numpy(activations), size=(height, width), mode="bilinear", align_corners=True)[0]
    flat = up.reshape(up.shape[0], -1)
    low, high = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
    return ((up - low) / (high - low + EPS)).numpy()


def score_weighted(task: ForwardTask, activations: np.ndarray, target: int, logits: np.ndarray) -> np.ndarray:
    x = task.x
    masks = channel_masks(activations, *x.shape[2:])
    runs = channel_batches(len(masks), task.batch)
    scores = np.empty(len(masks), np.float64)
    for step, channels in enumerate(runs, 1):
        masked = (x * masks[channels.start:channels.stop, None]).astype(np.float32)
        scores[channels.start:channels.stop] = task.model.logits(masked)[:, target]
        task.progress(step, len(runs))
    weights = np.exp(scores - scores.max())
    return weighted_sum(weights / weights.sum(), activations)


def run(task: ForwardTask) -> Attribution:
    return forward_cam(task, score_weighted)
