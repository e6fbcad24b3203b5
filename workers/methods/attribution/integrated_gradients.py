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

from core.methods import Attribution
from core.preprocessing import fill_value
from workers.methods.mechanics.backprop import (
    ClassLogit,
    class_logits,
    gradient_heat,
    input_gradient,
    label_metrics,
    objective_of,
)
from workers.methods.task import Task


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [−1, 1], by Newton's method on P_n (O(n²), where numpy's
    `leggauss` solves an n×n eigenproblem, O(n³), too slow at the largest step counts)."""
    if n <= 100:
        return np.polynomial.legendre.leggauss(n)
    x = np.cos(np.pi * (np.arange(1, n + 1) - 0.25) / (n + 0.5))
    for _ in range(100):
        p_prev, p = np.ones_like(x), x.copy()
        for k in range(2, n + 1):  # Bonnet: k P_k = (2k − 1) x P_{k−1} − (k − 1) P_{k−2}
            p_prev, p = p, ((2 * k - 1) * x * p - (k - 1) * p_prev) / k
        derivative = n * (x * p - p_prev) / (x * x - 1)
        step = p / derivative
        x -= step
        if np.abs(step).max() < 1e-15:
            break
    return x[::-1].copy(), (2 / ((1 - x * x) * derivative * derivative))[::-1].copy()


def quadrature(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α in [0, 1] and their weights (summing to 1): Gauss–Legendre, or the midpoint rule."""
    if rule == "gauss_legendre":
        nodes, weights = gauss_legendre(steps)
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
    baseline = baseline_of(x, p.baseline, network.record)
    target, scores = class_logits(network, torch.cat([x, baseline]), objective_of(p, network.record).target)
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
    difference = float(scores[0] - scores[1])
    gap = abs(float(attribution.sum(dtype=np.float64)) - difference) / abs(difference) if difference else None
    metrics = {"target": target, "target_logit": float(scores[0]), "baseline_logit": float(scores[1]),
               "completeness_gap": gap}
    return Attribution(attribution, gradient_heat(attribution), label_metrics(network, metrics))
