"""Grad-CAM (Selvaraju et al. 2017).

For the layer's activations A (K×h×w) and the class logit y:
α_k = (1 / hw) Σ_ij ∂y/∂A_kij,  map = ReLU(Σ_k α_k A_k), in logit units at the layer's grid.
"""

from __future__ import annotations

import torch

from core.methods import Attribution
from workers.methods.mechanics.cam import gradient_cam
from workers.methods.task import Task


def channel_weighted(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Σ_k α_k A_k with α_k the spatial mean of the channel's gradient."""
    return (grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)


def run(task: Task) -> Attribution:
    return gradient_cam(task, channel_weighted)
