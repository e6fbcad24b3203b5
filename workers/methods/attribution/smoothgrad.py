"""SmoothGrad (Smilkov et al. 2017): the input gradient averaged over noisy copies of the input.

attribution = (1/n) Σ_i ∂y/∂x (x + ε_i),  ε_i ~ N(0, σ²),  σ = noise · (max(x) − min(x)),
x in model-input space. Noise is drawn from a generator seeded with `seed`, `batch` copies at a time.
"""

from __future__ import annotations

import math

import torch

from core.methods import Attribution
from workers.methods.mechanics.backprop import (
    ClassLogit,
    class_logits,
    gradient_heat,
    input_gradient,
    label_metrics,
    objective_of,
)
from workers.methods.task import Task


def run(task: Task) -> Attribution:
    p, network, x = task.params, task.network, task.x.detach()
    target, logit = class_logits(network, x, objective_of(p, network.record).target)
    sigma = p.noise * float(x.max() - x.min())
    generator = torch.Generator(device=x.device).manual_seed(p.seed)
    total = torch.zeros_like(x[0])
    steps = math.ceil(p.samples / task.batch)
    for step in range(steps):
        n = min(task.batch, p.samples - step * task.batch)
        noise = torch.randn((n, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype) * sigma
        grad, _ = input_gradient(network, x.repeat(n, 1, 1, 1) + noise, ClassLogit(target))
        total += grad.sum(dim=0)
        task.progress(step + 1, steps)
    attribution = (total / p.samples).float().cpu().numpy()
    metrics = {"target": target, "target_logit": float(logit[0]), "sigma": sigma}
    return Attribution(attribution, gradient_heat(attribution), label_metrics(network, metrics))
