"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader & Balasubramanian 2018).

With g = ∂y/∂A for the class logit y and the layer's activations A (K×h×w):
a_kij = g² / (2g² + Σ_ij A_kij · g³ + 1e-6) (0 where g = 0), w_k = Σ_ij a_kij ReLU(g_kij),
map = ReLU(Σ_k w_k A_k): pytorch-grad-cam's `GradCAMPlusPlus`, eps included.
"""

from __future__ import annotations

import torch

from core.methods import Attribution
from workers.methods.mechanics.cam import gradient_cam
from workers.methods.task import Task

EPS = 1e-6


def plus_plus_weighted(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    g2 = grads**2
    alpha = g2 / (2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g2 * grads + EPS)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * torch.relu(grads)).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


def run(task: Task) -> Attribution:
    return gradient_cam(task, plus_plus_weighted)
