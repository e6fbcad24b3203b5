"""XGrad-CAM (Fu, Hu, Dong, Guo, Yang & Chen 2020).

With g = ∂y/∂A for the class logit y and the layer's activations A (K×h×w):
w_k = Σ_ij g_kij A_kij / (Σ_ij A_kij + 1e-7), map = ReLU(Σ_k w_k A_k): pytorch-grad-cam's `XGradCAM`, eps included.
"""

from __future__ import annotations

import torch

from core.methods import Attribution
from workers.methods.mechanics.cam import gradient_cam
from workers.methods.task import Task

EPS = 1e-7


def axiom_weighted(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    weights = (grads * activations).sum(dim=(2, 3), keepdim=True) / (activations.sum(dim=(2, 3), keepdim=True) + EPS)
    return (weights * activations).sum(dim=1)


def run(task: Task) -> Attribution:
    return gradient_cam(task, axiom_weighted)
