"""What guided backpropagation and the deconvnet share: a class or unit projected back to pixels
by one backward pass under a rectifier rule (see `backprop`)."""

from __future__ import annotations

from core.methods import Attribution
from workers.methods.mechanics.backprop import Rule, gradient_heat, input_gradient, label_metrics, objective_of
from workers.methods.task import Task


def project(task: Task, rule: Rule) -> Attribution:
    """The objective (class logit, or one unit) backpropagated to the input under `rule`."""
    grad, info = input_gradient(task.network, task.x, objective_of(task.params, task.network.record), rule)
    attribution = grad[0].float().cpu().numpy()
    task.progress(1, 1)
    return Attribution(attribution, gradient_heat(attribution), {**label_metrics(task.network, info), "rule": rule})
