"""Integrated gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks").

attribution = (x − x') ⊙ ∫₀¹ ∂F/∂x (x' + α(x − x')) dα, the integral by a quadrature rule
(Gauss–Legendre nodes, or the midpoint rule on `steps` evenly spaced points, as in captum),
`batch` path points per backward pass. Completeness says Σ attribution = F(x) − F(x'); the metric
`completeness_gap` = |Σ attribution − (F(x) − F(x'))| / |F(x) − F(x')| measures how far the
quadrature is from it (F: the target's logit).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from service.forward import fill_value
from workers.methods.backprop import ClassLogit, gradient_heat, input_gradient, label_metrics, objective_of, top_class
from workers.methods.task import Attribution, Task


def quadrature(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α in [0, 1] and their weights (summing to 1): Gauss–Legendre, or the midpoint rule."""
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)


def baseline_of(x: torch.Tensor, kind: str, record) -> torch.Tensor:
    """x': zeros (0 in model-input space), black (a black image) or blur (the image blurred)."""
    if kind == "zeros":
        return torch.zeros_like(x)
    fill = 0.0 if kind == "black" else "blur"
    return torch.as_tensor(np.ascontiguousarray(fill_value(x.cpu().numpy(), fill, record)), dtype=x.dtype,
                           device=x.device)


def run(task: Task) -> Attribution:
    p, network, x = task.params, task.network, task.x.detach()
    target = objective_of(p, network.record).target
    target = top_class(network, x) if target is None else target
    baseline = baseline_of(x, p.baseline, network.record)
    alphas, weights = quadrature(p.steps, p.rule)
    path = torch.as_tensor(alphas, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    weight = torch.as_tensor(weights, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    total = torch.zeros_like(x[0])
    batches = math.ceil(p.steps / task.batch)
    for step in range(batches):
        part = slice(step * task.batch, (step + 1) * task.batch)
        points = baseline + path[part] * (x - baseline)
        grad, _ = input_gradient(network, points, ClassLogit(target))
        total += (grad * weight[part]).sum(dim=0)
        task.progress(step + 1, batches)
    attribution = ((x[0] - baseline[0]) * total).float().cpu().numpy()
    with torch.no_grad():
        scores = network.module(torch.cat([x, baseline]))[:, target]
    difference = float(scores[0] - scores[1])
    gap = abs(float(attribution.sum(dtype=np.float64)) - difference) / abs(difference) if difference else None
    metrics = {"target": target, "target_logit": float(scores[0]), "baseline_logit": float(scores[1]),
               "completeness_gap": gap}
    return Attribution(attribution, gradient_heat(attribution), label_metrics(network, metrics))
