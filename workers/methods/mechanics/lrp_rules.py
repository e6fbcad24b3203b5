"""The rules of layer-wise relevance propagation: how one layer hands the relevance of its outputs to its inputs.

Relevance R (one number per output, in the units of the output relevance: 1 for the target's one-hot) flows down
the network the way a gradient does, each layer redistributing it over its inputs (Bach et al. 2015; Montavon et
al. 2019, "Layer-wise relevance propagation: an overview"). The arithmetic is zennit's (Anders et al. 2021), for a
linear layer z = W x + b with x⁺ = max(x, 0), x⁻ = min(x, 0), and W⁺, W⁻, b⁺, b⁻ likewise:

    ε       R_in = x ⊙ Wᵀ s,  s = R / stab(z)                        Bach et al. 2015; ε absorbs weak or
                                                                       contradictory contributions
    z⁺      z = (W⁺x⁺ + b⁺) + W⁻x⁻,  R_in = x⁺ ⊙ W⁺ᵀ s + x⁻ ⊙ W⁻ᵀ s  only the contributions that raise the output
                                                                       (Montavon et al. 2017; negative inputs kept)
    γ       z_pos = (W + γW⁺)x⁺ + (b + γb⁺) + (W + γW⁻)x⁻ for outputs z > 0, z_neg = (W + γW⁻)x⁺ + (b + γb⁻)
            + (W + γW⁺)x⁻ for z < 0; each output's relevance split in its pair's proportions
                                                                       (the generalised γ of Andéol et al. 2021)
    α2β1    2 · (the z⁺ split) − 1 · (the split of the negative contributions, W⁻x⁺ + b⁻ + W⁺x⁻)
                                                                       (Bach et al. 2015)
    z^B     z = (Wx + b) − (W⁺l + b⁺) − (W⁻h + b⁻),  R_in = x ⊙ Wᵀs − (l ⊙ W⁺ᵀs + h ⊙ W⁻ᵀs)
                                                                       (Montavon et al. 2017) for a first layer
                                                                       whose inputs lie in [l, h]
    flat    R_in = 1ᵀ s with unit weights and no bias, s = R / stab(1ᵀ1): each output's relevance spread evenly over
            its receptive field                                       (Lapuschkin et al. 2019)
    Norm    sums, average pools, scaling by a constant: R_i = x_i ⊙ (∂z/∂x_i)ᵀ (R / stab(z)), each input's share
    Pass    element-wise activations: R_in = R

stab(z) = z + ε·sign(z) with sign(0) = +1: ε (dimensionless, the same for every rule) keeps the division finite.
Wᵀ s is the vector-Jacobian product of the layer's own forward at the modified parameters, so a convolution's
padding, stride and groups are its own code's. Conservation: Σ R_in = Σ R where biases and ε take nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

LayerForward = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""(input, weight, bias) → output: a linear layer's own forward at the given parameters."""


def stabilise(z: Tensor, epsilon: float) -> Tensor:
    """z moved away from 0 by ε, with the sign of z (+ at 0), as zennit's stabiliser does."""
    return z + ((z == 0).to(z) + z.sign()) * epsilon


@dataclass(frozen=True)
class Affine:
    """A linear layer as a rule sees it: its forward at any parameters, and its parameters (BatchNorm merged in)."""

    forward: LayerForward
    weight: Tensor
    bias: Tensor | None

    def passes(self, runs: Sequence[tuple[Tensor, Tensor, Tensor | None]]) -> tuple[list[Tensor], list[Tensor]]:
        """Each (input, weight, bias) run through the layer: the inputs as leaves that require grad, the outputs."""
        inputs = [x.detach().requires_grad_(True) for x, _, _ in runs]
        return inputs, [self.forward(x, w, b) for x, (_, w, b) in zip(inputs, runs)]


def _positive(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _negative(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


def _backward(inputs: list[Tensor], outputs: list[Tensor], signals: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Wᵀ s for every pass at once."""
    return torch.autograd.grad(outputs, inputs, list(signals))


@dataclass(frozen=True)
class Epsilon:
    """The ε rule (LRP-0 at ε = 0)."""

    epsilon: float

    def __call__(self, layer: Affine, x: Tensor, relevance: Tensor) -> Tensor:
        inputs, (z,) = layer.passes([(x, layer.weight, layer.bias)])
        (g,) = _backward(inputs, [z], [relevance / stabilise(z, self.epsilon)])
        return x * g


@dataclass(frozen=True)
class ZPlus:
    """The z⁺ rule: relevance follows the positive contributions (positive weights on positive inputs, negative
    weights on negative inputs)."""

    epsilon: float

    def __call__(self, layer: Affine, x: Tensor, relevance: Tensor) -> Tensor:
        w, b = layer.weight, layer.bias
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        inputs, (z_pos, z_neg) = layer.passes([(pos, w.clamp(min=0), _positive(b)), (neg, w.clamp(max=0), None)])
        s = relevance / stabilise(z_pos + z_neg, self.epsilon)
        g_pos, g_neg = _backward(inputs, [z_pos, z_neg], [s, s])
        return pos * g_pos + neg * g_neg


@dataclass(frozen=True)
class Gamma:
    """The generalised γ rule: positive contributions favoured by γ for positive outputs, negative ones for negative
    outputs."""

    gamma: float
    epsilon: float

    def __call__(self, layer: Affine, x: Tensor, relevance: Tensor) -> Tensor:
        w, b, gamma = layer.weight, layer.bias, self.gamma
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        w_up, w_down = w + gamma * w.clamp(min=0), w + gamma * w.clamp(max=0)
        b_up = None if b is None else b + gamma * b.clamp(min=0)
        b_down = None if b is None else b + gamma * b.clamp(max=0)
        inputs, outputs = layer.passes([(pos, w_up, b_up), (neg, w_down, None), (pos, w_down, b_down), (neg, w_up, None)])
        with torch.no_grad():
            z = layer.forward(x, w, b)
        s_pos = (z > 0) * relevance / stabilise(outputs[0] + outputs[1], self.epsilon)
        s_neg = (z < 0) * relevance / stabilise(outputs[2] + outputs[3], self.epsilon)
        g = _backward(inputs, outputs, [s_pos, s_pos, s_neg, s_neg])
        return pos * g[0] + neg * g[1] + pos * g[2] + neg * g[3]


@dataclass(frozen=True)
class AlphaBeta:
    """The αβ rule (α − β = 1): α times the split of the positive contributions minus β times that of the negative."""

    alpha: float
    beta: float
    epsilon: float

    def __call__(self, layer: Affine, x: Tensor, relevance: Tensor) -> Tensor:
        w, b = layer.weight, layer.bias
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)
        inputs, o = layer.passes([(pos, w_pos, _positive(b)), (neg, w_neg, None), (pos, w_neg, _negative(b)),
                                  (neg, w_pos, None)])
        s_pos = relevance / stabilise(o[0] + o[1], self.epsilon)
        s_neg = relevance / stabilise(o[2] + o[3], self.epsilon)
        g = _backward(inputs, o, [s_pos, s_pos, s_neg, s_neg])
        return self.alpha * (pos * g[0] + neg * g[1]) - self.beta * (pos * g[2] + neg * g[3])


@dataclass(frozen=True)
class ZBox:
    """The z^B rule for a first layer whose inputs are bounded: `low` and `high` (model-input units, broadcast to the
    input, e.g. 1×C×1×1 per channel) are the smallest and largest values an input can take."""

    low: Tensor
    high: Tensor
    epsilon: float

    def __call__(self, layer: Affine, x: Tensor, relevance: Tensor) -> Tensor:
        w, b = layer.weight, layer.bias
        low, high = (torch.broadcast_to(bound.to(x), x.shape) for bound in (self.low, self.high))
        inputs, (z, z_low, z_high) = layer.passes([(x, w, b), (low, w.clamp(min=0), _positive(b)),
                                                   (high, w.clamp(max=0), _negative(b))])
        s = relevance / stabilise(z - (z_low + z_high), self.epsilon)
        g, g_low, g_high = _backward(inputs, [z, z_low, z_high], [s, s, s])
        return x * g - (low * g_low + high * g_high)


@dataclass(frozen=True)
class Flat:
    """The flat rule: unit weights, no bias, unit inputs."""

    epsilon: float

    def __call__(self, layer: Affine, x: Tensor, relevance: Tensor) -> Tensor:
        inputs, (z,) = layer.passes([(torch.ones_like(x), torch.ones_like(layer.weight), None)])
        (g,) = _backward(inputs, [z], [relevance / stabilise(z, self.epsilon)])
        return g


Rule = Epsilon | ZPlus | Gamma | AlphaBeta | ZBox | Flat


def norm(forward: Callable[..., Tensor], args: Sequence, active: Sequence[bool], relevance: Tensor,
         epsilon: float) -> list[Tensor | None]:
    """The Norm rule for an op that is linear in its `active` arguments (a sum, an average pool, a scaling by a
    constant): each active argument's share x_i ⊙ (∂z/∂x_i)ᵀ (R / stab(z)); None for the others (constants)."""
    leaves = [a.detach().requires_grad_(True) if on else a for a, on in zip(args, active)]
    z = forward(*leaves)
    wanted = [leaf for leaf, on in zip(leaves, active) if on]
    grads = iter(torch.autograd.grad(z, wanted, relevance / stabilise(z, epsilon)))
    return [leaf.detach() * next(grads) if on else None for leaf, on in zip(leaves, active)]
