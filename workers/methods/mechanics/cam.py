"""Class activation maps from gradients: the pipeline every gradient CAM shares, with the one step each method
changes. The layer's activations A (1×K×h×w) are captured, the class logit y is backpropagated to them once, and
`combine(A, ∂y/∂A)` makes the 1×h×w map, which is rectified (ReLU: only evidence for the class) and kept at the
layer's grid, in logit units; the heat is the map over its maximum."""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.methods import Attribution
from workers.methods.mechanics.backprop import captured, label_metrics, objective_of
from workers.methods.mechanics.forward_cam import layer_map
from workers.methods.task import Task

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""combine(activations, gradients), both 1×K×h×w → the 1×h×w map before its ReLU."""


def gradient_cam(task: Task, combine: Combine) -> Attribution:
    """attribution: 1×h×w map (ReLU'd, unnormalised); heat: the map divided by its maximum."""
    network, layer = task.network, task.params.layer
    target = objective_of(task.params, network.record).target
    with captured(network.layer_module(layer), leaf=True) as box:
        logits = network.module(task.x.detach())
    activations = box["output"]
    if target is None:
        target = int(logits[0].argmax())
    (grads,) = torch.autograd.grad(logits[0, target], activations)
    cam = torch.relu(combine(activations, grads)).detach().float().cpu().numpy()
    task.progress(1, 1)
    metrics = {"target": target, "target_logit": float(logits[0, target].detach()), "layer": layer}
    return layer_map(cam, label_metrics(network, metrics))
