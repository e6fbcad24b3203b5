"""Layer-CAM (Jiang, Zhang, Hou, Cheng & Wei 2021).

With g = ∂y/∂A for the class logit y and the layer's activations A (K×h×w): map = ReLU(Σ_k ReLU(g_k) ⊙ A_k), each
position weighted by its own positive gradient.
"""

from __future__ import annotations

import torch

from core.methods import Attribution
from workers.methods.mechanics.cam import gradient_cam
from workers.methods.task import Task


def positive_elementwise(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return (torch.relu(grads) * activations).sum(dim=1)


def run(task: Task) -> Attribution:
    return gradient_cam(task, positive_elementwise)
