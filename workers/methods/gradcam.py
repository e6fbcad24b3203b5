"""Grad-CAM (Selvaraju et al. 2017).

For the layer's activations A (K×h×w) and the class logit y:
α_k = (1 / hw) Σ_ij ∂y/∂A_kij,  map = ReLU(Σ_k α_k A_k), in logit units at the layer's grid.
"""

from __future__ import annotations

import torch

from core.methods import Attribution
from workers.methods.backprop import captured, label_metrics, objective_of
from workers.methods.task import Task


def run(task: Task) -> Attribution:
    """attribution: 1×h×w map (ReLU'd, unnormalised); heat: the map divided by its maximum."""
    network, layer = task.network, task.params.layer
    target = objective_of(task.params, network.record).target
    with captured(network.layer_module(layer), leaf=True) as box:
        logits = network.module(task.x.detach())
    activations = box["output"]
    if target is None:
        target = int(logits[0].argmax())
    (grads,) = torch.autograd.grad(logits[0, target], activations)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1)).detach().float().cpu().numpy()
    peak = float(cam.max())
    heat = cam[0] / peak if peak > 0 else cam[0]
    task.progress(1, 1)
    metrics = {"target": target, "target_logit": float(logits[0, target].detach()), "layer": layer, "grid": list(cam.shape[1:])}
    return Attribution(cam, heat, label_metrics(network, metrics))
