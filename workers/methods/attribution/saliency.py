"""Saliency (Simonyan, Vedaldi & Zisserman 2014): attribution = d logit[target] / d input."""

from __future__ import annotations

from core.methods import Attribution
from workers.methods.mechanics.backprop import gradient_heat, input_gradient, label_metrics, objective_of
from workers.methods.task import Task


def run(task: Task) -> Attribution:
    """The raw input gradient (logit units per input unit); heatmap: max over channels of |gradient|."""
    grad, info = input_gradient(task.network, task.x, objective_of(task.params, task.network.record))
    attribution = grad[0].float().cpu().numpy()
    task.progress(1, 1)
    return Attribution(attribution, gradient_heat(attribution), label_metrics(task.network, info))
