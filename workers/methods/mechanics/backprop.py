"""One backward pass, with the rectifiers' backward rule swapped for the duration of a call.

Rules, for a rectifier with input x and incoming gradient g (Springenberg et al. 2015, fig. 1):

    gradient   g · f'(x)                      plain backpropagation (Simonyan et al. 2014)
    guided     max(g · f'(x), 0)              keep signal where the input and the gradient pass
    deconvnet  r(g)                           the rectifier applied to the backward signal only
                                              (Zeiler & Fergus 2014); r = ReLU, or LeakyReLU
                                              with the module's slope

Rectifiers are found by module type: `nn.ReLU`, `nn.LeakyReLU`, and `nn.Hardtanh` clipping at
a lower bound ≥ 0 (`nn.ReLU6`, ONNX `Clip(0, 6)`); a Hardtanh that does not cut at 0 is not a
rectifier and keeps the plain rule. Max-pooling needs no swap: autograd already routes the
signal through each window's argmax, which are Zeiler & Fergus's "switches". Rectifiers called
as functions (`F.relu` inside a forward) are not modules and keep the plain rule.

Every swap and hook is undone in `finally`, so nothing outlives a call, whether it succeeds or
raises (cancellation, timeout, a bad layer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.methods import Network

Rule = Literal["gradient", "guided", "deconvnet"]


def is_rectifier(module: nn.Module) -> bool:
    if isinstance(module, nn.Hardtanh):  # nn.ReLU6 is a Hardtanh(0, 6)
        return module.min_val >= 0
    return isinstance(module, (nn.ReLU, nn.LeakyReLU))


def rectify(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rectifier's forward, out of place (an in-place module must not overwrite saved inputs)."""
    if isinstance(module, nn.Hardtanh):
        return F.hardtanh(x, module.min_val, module.max_val)
    if isinstance(module, nn.LeakyReLU):
        return F.leaky_relu(x, module.negative_slope)
    return F.relu(x)


def plain_backward(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """g · f'(x) exactly as autograd computes it (one fused kernel; strict inequalities at the kinks)."""
    if isinstance(module, nn.Hardtanh):
        return torch.ops.aten.hardtanh_backward(grad, x, module.min_val, module.max_val)
    if isinstance(module, nn.LeakyReLU):
        return torch.ops.aten.leaky_relu_backward(grad, x, module.negative_slope, False)
    return torch.ops.aten.threshold_backward(grad, x, 0)


class _RectifierRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module, rule: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.module, ctx.rule = module, rule
        return rectify(module, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            slope = ctx.module.negative_slope if isinstance(ctx.module, nn.LeakyReLU) else 0.0
            return F.leaky_relu(grad, slope) if slope else F.relu(grad), None, None
        return plain_backward(ctx.module, x, grad).clamp_(min=0), None, None


@contextlib.contextmanager
def forwards_swapped(swaps: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Inside the block, each module's `forward` is the one paired with it; afterwards each has what it had before
    (its class's own, or one already set on the instance), however the block ends. `swaps` may be a generator that
    fails part way (a module without a rule): the swaps made until then are undone."""
    done: list[tuple[nn.Module, object]] = []
    try:
        for module, forward in swaps:
            done.append((module, module.__dict__.get("forward")))
            module.forward = forward
        yield
    finally:
        for module, before in reversed(done):
            del module.forward  # the class's own forward shows through again
            if before is not None:
                module.forward = before


@contextlib.contextmanager
def backward_rule(model: nn.Module, rule: Rule) -> Iterator[None]:
    """Inside the block, every rectifier module of `model` backpropagates by `rule`."""
    swaps = [] if rule == "gradient" else ((m, _bound_rule(m, rule)) for m in model.modules() if is_rectifier(m))
    with forwards_swapped(swaps):
        yield


def _bound_rule(module: nn.Module, rule: str):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _RectifierRule.apply(x, module, rule)

    return forward


class _Stop(Exception):
    """Raised by a capturing hook to end a forward pass once the wanted layer has run."""


@contextlib.contextmanager
def captured(module: nn.Module, *, stop: bool = False, leaf: bool = False) -> Iterator[dict]:
    """Inside the block, `box["output"]` is `module`'s output of the last forward pass.

    With `stop`, the forward pass ends right there (wrap the call in `forward_until`). With `leaf`,
    the output becomes a new leaf that requires grad: gradients can be taken with respect to it,
    and nothing before the layer is recorded for backward (a cheaper forward pass)."""
    box: dict = {}

    def hook(_module, _inputs, output):
        if leaf:
            output = output.detach().requires_grad_(True)
        box["output"] = output
        if stop:
            raise _Stop
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def forward_until(network: Network, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Layer `layer`'s output for input `x`, without running the rest of the network."""
    with captured(network.layer_module(layer), stop=True) as box:
        try:
            network.module(x)
        except _Stop:
            pass
    if "output" not in box:
        raise ValueError(f"layer {layer!r} did not run in the forward pass")
    return box["output"]


@dataclass(frozen=True)
class ClassLogit:
    """Objective: the logit of class `target` (None: each image's top-1 class)."""

    target: int | None = None


@dataclass(frozen=True)
class Unit:
    """Objective: one activation, `layer`[channel, y, x]; position None: the channel's maximum."""

    layer: str
    channel: int
    position: tuple[int, int] | None = None


def objective_of(params, record) -> ClassLogit | Unit:
    """The objective a kind's params describe: a class target (index or label), or a unit (422
    `no_class_scores` for a class objective on a model without class scores)."""
    if getattr(params, "layer", None) is not None and getattr(params, "channel", None) is not None:
        return Unit(params.layer, params.channel, tuple(params.position) if params.position else None)
    record.require_class_scores("a class objective")
    return ClassLogit(None if params.target is None else record.class_index(params.target))


def input_gradient(network: Network, x: torch.Tensor, objective: ClassLogit | Unit,
                   rule: Rule = "gradient") -> tuple[torch.Tensor, dict]:
    """d objective / d x for a batch N×C×H×W (each image's own objective), and what was explained.

    Returns the gradient (N×C×H×W) and metrics: for a class, `target` (index) and `target_logit`
    (of the first image); for a unit, `layer`, `channel`, `position` [y, x] and `activation`.
    """
    x = x.detach().requires_grad_(True)
    with backward_rule(network.module, rule):
        if isinstance(objective, Unit):
            maps = forward_until(network, x, objective.layer)[:, objective.channel]
            if objective.position is None:
                flat = maps.detach().flatten(1).argmax(1)
                ys, xs = flat // maps.shape[-1], flat % maps.shape[-1]
            else:
                ys = torch.full((x.shape[0],), objective.position[0], device=x.device)
                xs = torch.full((x.shape[0],), objective.position[1], device=x.device)
            score = maps[torch.arange(x.shape[0], device=x.device), ys, xs]
            info = {"layer": objective.layer, "channel": objective.channel,
                    "position": [int(ys[0]), int(xs[0])], "activation": float(score[0].detach())}
        else:
            logits = network.module(x)
            target = objective.target if objective.target is not None else int(logits[0].argmax())
            score = logits[:, target]
            info = {"target": target, "target_logit": float(score[0].detach())}
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad, info


def class_logits(network: Network, x: torch.Tensor, target: int | None) -> tuple[int, torch.Tensor]:
    """(target, logits of every image of `x` for it) without recording a graph; target None → the
    first image's top-1 class."""
    with torch.no_grad():
        logits = network.module(x)
    target = int(logits[0].argmax()) if target is None else target
    return target, logits[:, target]


def label_metrics(network: Network, info: dict) -> dict:
    """Add the class label to a class objective's metrics."""
    if "target" in info:
        info = {**info, "target_label": network.record.label(info["target"])}
    return info


def gradient_heat(attribution: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """C×H×W attribution → H×W in [0, 1]: max over channels of |attribution|, divided by its
    `percentile`-th percentile and clipped (the visualisation of Smilkov et al. 2017)."""
    magnitude = np.abs(attribution).max(axis=0)
    top = float(np.percentile(magnitude, percentile)) or float(magnitude.max())  # sparse maps: their maximum
    return np.clip(magnitude / top, 0.0, 1.0) if top > 0 else np.zeros_like(magnitude)
