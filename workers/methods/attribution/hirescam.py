"""HiResCAM (Draelos & Carin 2020).

For the layer's activations A (K×h×w) and the class logit y: map = ReLU(Σ_k ∂y/∂A_k ⊙ A_k), in logit units at
the layer's grid. Grad-CAM averages each channel's gradient over positions first; HiResCAM keeps it per position,
so a position counts only where its own gradient does.
"""

from __future__ import annotations

import torch

from core.methods import Attribution
from workers.methods.mechanics.cam import gradient_cam
from workers.methods.task import Task


def elementwise(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Σ_k ∂y/∂A_k ⊙ A_k."""
    return (grads * activations).sum(dim=1)


def run(task: Task) -> Attribution:
    return gradient_cam(task, elementwise)
