"""Layer-wise relevance propagation through a whole network, with zennit's composites, for the duration of a call.

A composite (`lrp_composites`) names the rule (`lrp_rules`) of each layer by its role (`lrp_layers`). The first layer
is the first convolution or dense layer the forward pass reaches (with any other that reads the same tensor, as
parallel branches of a stem do), zennit's first layer in a network built in forward order.

How it runs: inside `relevance_rules`, every module with a rule for its role has its `forward` replaced, on the instance, by
one that runs the module's own forward inside an autograd function whose backward is the rule: autograd then
carries relevance where it would carry the gradient. What zennit does with canonizers is done on the fly:

- a BatchNorm that reads a linear layer's output is merged into that layer's rule (weight · γ/√(var + ε_bn),
  bias (b − mean) · γ/√(var + ε_bn) + β, computed from its running statistics when relevance passes): the
  network's parameters are never written, so the network the worker shares across jobs stays as it was;
- a padding step before a linear layer (the twin's explicit or SAME padding) is taken into that layer, as a
  convolution's own padding is: flat and z^B see only real input values, and relevance goes to the unpadded input;
- additions of two activations written as code instead of a module (the built-in's residual `y + x`) are found
  during the forward pass by a torch-function mode and given the Norm rule, as zennit's `Sum` module for ResNet
  blocks is; the twin's `Add` modules get it by their role.

Every replaced forward is put back in `finally`, after a success or a failure (a refused op, a bad input).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from core.errors import Invalid
from workers.methods.mechanics.backprop import forwards_swapped
from workers.methods.mechanics.lrp_composites import Composite
from workers.methods.mechanics.lrp_layers import Role, linear_in_activations, name_of, role_of
from workers.methods.mechanics.lrp_rules import Affine, Rule, norm


def merge_batch_norm(weight: Tensor, bias: Tensor | None, batch_norm: nn.Module) -> tuple[Tensor, Tensor]:
    """The weight and bias of a linear layer followed by an inference BatchNorm, as one layer (new tensors)."""
    scale = (batch_norm.running_var + batch_norm.eps) ** 0.5
    scale = 1 / scale if batch_norm.weight is None else batch_norm.weight / scale
    shift = 0 if batch_norm.bias is None else batch_norm.bias
    bias = torch.zeros_like(batch_norm.running_mean) if bias is None else bias
    return weight * scale.reshape(-1, *(1,) * (weight.ndim - 1)), (bias - batch_norm.running_mean) * scale + shift


def run_at(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`module`'s own forward with `weight` and `bias` in place of its parameters, run on a shallow stand-in: the
    module itself is not touched, and no hook fires."""
    stand_in = copy.copy(module)
    stand_in._parameters = {**module._parameters, "weight": weight, "bias": bias}
    return type(module).forward(stand_in, x)


def _own_forward(module: nn.Module) -> Callable[..., Tensor]:
    return lambda *args: type(module).forward(module, *args)


def _is_activation(value) -> bool:
    """A tensor computed from the input (parameters are frozen, constants never require grad)."""
    return isinstance(value, Tensor) and value.requires_grad and torch.is_grad_enabled()


@dataclass(frozen=True)
class _Step:
    """One op in the forward pass: how it computes, and how it hands relevance to its arguments
    (arguments, which of them are activations, relevance of its output → one relevance or None per argument)."""

    forward: Callable[..., Tensor]
    relevance: Callable[[list, list[bool], Tensor], list]
    reads_inputs: bool = True  # whether the rule needs the arguments' values (Pass does not: nothing is saved)


def _pass_step(module: nn.Module) -> _Step:
    return _Step(_own_forward(module), lambda args, active, r: [r if on else None for on in active], False)


def _norm_step(forward: Callable[..., Tensor], epsilon: float) -> _Step:
    return _Step(forward, lambda args, active, r: norm(forward, args, active, r, epsilon))


class _Propagate(torch.autograd.Function):
    """Forward: the step's own forward. Backward: the step's relevance rule, in place of the gradient."""

    @staticmethod
    def forward(ctx, step: _Step, *args):
        ctx.step, ctx.args = step, [None if isinstance(a, Tensor) else a for a in args]
        ctx.positions = [i for i, a in enumerate(args) if isinstance(a, Tensor) and step.reads_inputs]
        ctx.save_for_backward(*(args[i] for i in ctx.positions))
        out = step.forward(*args)
        return out.clone() if any(out is a for a in args) else out  # an output must not be its input

    @staticmethod
    def backward(ctx, relevance: Tensor):
        args = list(ctx.args)
        for i, tensor in zip(ctx.positions, ctx.saved_tensors):
            args[i] = tensor.detach()
        with torch.enable_grad():
            shares = ctx.step.relevance(args, list(ctx.needs_input_grad[1:]), relevance)
        return (None, *shares)


def _unpadded(x: Tensor) -> Tensor:
    return x


@dataclass
class _LinearCall:
    """One call of a linear layer, on the input of the padding before it (if any: `pad`); `batch_norm` is set when a
    BatchNorm reads its output."""

    module: nn.Module
    rule: Rule
    pad: Callable[[Tensor], Tensor] = _unpadded
    batch_norm: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        return type(self.module).forward(self.module, self.pad(x))

    def relevance(self, args: list, active: list[bool], relevance: Tensor) -> list:
        weight, bias = self.module.weight, self.module.bias
        if self.batch_norm is not None:
            weight, bias = merge_batch_norm(weight, bias, self.batch_norm)
        layer = Affine(lambda x, w, b: run_at(self.module, self.pad(x), w, b), weight, bias)
        return [self.rule(layer, args[0], relevance)]


class _FunctionalSums(TorchFunctionMode):
    """During a forward pass: `a + b` of two activations, written as code, becomes a step with the Norm rule."""

    ADDITIONS = (torch.add, Tensor.add, Tensor.__add__)

    def __init__(self, epsilon: float):
        super().__init__()
        self.step = _norm_step(torch.add, epsilon)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.ADDITIONS and not kwargs and len(args) == 2 and all(map(_is_activation, args)):
            return _Propagate.apply(self.step, *args)
        return func(*args, **(kwargs or {}))


def refusal(module: nn.Module) -> Invalid:
    """422 `unsupported_for_lrp`: the op has no LRP rule, and a plain gradient in its place would not be LRP."""
    return Invalid(f"LRP cannot explain this model: op {name_of(module)} takes activations, and LRP has no rule for "
                   "it (only sums of contributions are redistributed: a product or quotient of two activations, an "
                   "exponential, a softmax or a normalisation by the input's own statistics is none)",
                   code="unsupported_for_lrp")


class _Propagation:
    """The rules of one composite over one model: each module's forward while they apply, and what one forward pass
    learns (the first linear layer's input; which padding made a tensor, and from what; which linear call's output
    each BatchNorm reads). Tensors are matched by identity, and held while the pass lasts so that ids stay unique."""

    def __init__(self, rules: Composite):
        self.rules = rules
        self.forget()

    def forget(self) -> None:
        self.first_input: Tensor | None = None
        self.padded: dict[int, tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]] = {}
        self.linear_outputs: dict[int, tuple[Tensor, _LinearCall]] = {}

    def forward_of(self, module: nn.Module, role: Role) -> Callable[..., Tensor] | None:
        """The forward that applies `module`'s rule, or None where autograd's gradient is the rule (routing)."""
        own = _own_forward(module)
        if role is Role.ROUTING:
            return None
        if role is Role.LINEAR:
            return lambda x: self.linear(module, x) if _is_activation(x) else own(x)
        if role is Role.BATCH_NORM:
            return lambda x: self.batch_norm(module, x) if _is_activation(x) else own(x)
        if role is Role.PADDING:
            return lambda x, *rest: self.padding(own, x, rest) if _is_activation(x) else own(x, *rest)

        def forward(*args):
            active = [_is_activation(a) for a in args]
            if not any(active):
                return own(*args)
            if role is Role.UNSUPPORTED or (role is Role.SUM and not linear_in_activations(module, active)):
                raise refusal(module)
            step = _pass_step(module) if role is Role.ACTIVATION else _norm_step(own, self.rules.epsilon)
            return _Propagate.apply(step, *args)

        return forward

    def padding(self, own: Callable[..., Tensor], x: Tensor, rest: tuple) -> Tensor:
        out = own(x, *rest)
        self.padded[id(out)] = (out, x, lambda t: own(t, *rest))
        return out

    def linear(self, module: nn.Module, x: Tensor) -> Tensor:
        held = self.padded.get(id(x))
        x, pad = (held[1], held[2]) if held is not None and held[0] is x else (x, _unpadded)
        if self.first_input is None:
            self.first_input = x
        if self.rules.first is not None and x is self.first_input:
            rule = self.rules.first
        else:
            rule = self.rules.convolution if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) else self.rules.dense
        call = _LinearCall(module, rule, pad)
        out = _Propagate.apply(_Step(call.forward, call.relevance), x)
        self.linear_outputs[id(out)] = (out, call)
        return out

    def batch_norm(self, module: nn.Module, x: Tensor) -> Tensor:
        held = self.linear_outputs.get(id(x))
        if held is not None and held[0] is x and held[1].batch_norm is None and not module.training \
                and module.running_mean is not None:
            held[1].batch_norm = module
        return _Propagate.apply(_pass_step(module), x)

    def run(self, model: nn.Module, x: Tensor) -> Tensor:
        self.forget()
        try:
            with _FunctionalSums(self.rules.epsilon):
                return model(x)
        finally:
            self.forget()


@contextlib.contextmanager
def relevance_rules(model: nn.Module, rules: Composite) -> Iterator[Callable[[Tensor], Tensor]]:
    """Inside the block, the yielded forward runs `model` so that backpropagating from its output propagates
    relevance by `rules` (raising 422 `unsupported_for_lrp` at an op without a rule)."""
    propagation = _Propagation(rules)

    def swaps() -> Iterator[tuple[nn.Module, Callable]]:
        for module in model.modules():
            role = role_of(module)
            if role is Role.UNSUPPORTED and (next(module.children(), None) is not None
                                             or type(module).forward is nn.Module.forward):
                continue  # a container (its children have roles), or a holder of constants that is never called
            forward = propagation.forward_of(module, role)
            if forward is not None:
                yield module, forward

    with forwards_swapped(swaps()):
        yield lambda x: propagation.run(model, x)


def input_relevance(model: nn.Module, x: Tensor, target: int | None, rules: Composite) -> tuple[Tensor, dict]:
    """Relevance at the input (N×C×H×W, each image's share of the output relevance: the one-hot of class `target`,
    None: the first image's top-1 class), and metrics: `target`, `target_logit` and `relevance_sum` (of the first
    image: 1 where the rules conserve relevance and biases and ε absorb none)."""
    x = x.detach().requires_grad_(True)
    with relevance_rules(model, rules) as forward:
        logits = forward(x)
        target = int(logits[0].argmax()) if target is None else target
        one_hot = torch.zeros_like(logits)
        one_hot[:, target] = 1.0
        (relevance,) = torch.autograd.grad(logits, x, one_hot)
    info = {"target": target, "target_logit": float(logits[0, target].detach()),
            "relevance_sum": float(relevance[0].sum())}
    return relevance, info
