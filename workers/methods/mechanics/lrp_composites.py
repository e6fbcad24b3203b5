"""zennit's composites: which LRP rule (`lrp_rules`) each linear layer gets, by its type and place.

    composite                   convolutions   dense layers   first layer
    epsilon_plus                z⁺             ε              like the others
    epsilon_plus_flat           z⁺             ε              flat
    epsilon_gamma_box           γ              ε              z^B, with the input's bounds
    epsilon_alpha2_beta1_flat   α2β1           ε              flat

In all four, activations and BatchNorm (once merged) pass relevance unchanged, sums and average pools split it by
the Norm rule, and max pooling and reshapes route it as the gradient does (`lrp_layers`). The z⁺ and γ rules suit
the many middle layers, ε the dense layers near the output, flat and z^B the first layer, whose inputs are pixels
rather than features (Montavon et al. 2019, "Layer-wise relevance propagation: an overview").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from torch import Tensor

from core.kinds.attribution import LrpComposite
from workers.methods.mechanics.lrp_rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus

COMPOSITES = get_args(LrpComposite)


@dataclass(frozen=True)
class Composite:
    """The rules of one composite: for convolutions, dense layers, and the first layer (None: no special one);
    `epsilon` is the stabiliser of the Norm rule."""

    convolution: Rule
    dense: Rule
    first: Rule | None
    epsilon: float


def composite(name: str, epsilon: float = 1e-6, gamma: float = 0.25,
              bounds: tuple[Tensor, Tensor] | None = None) -> Composite:
    """The composite `name` (zennit's names); `bounds`, the lowest and highest input values (model-input units,
    e.g. 1×C×1×1), only for epsilon_gamma_box."""
    dense = Epsilon(epsilon)
    if name == "epsilon_plus":
        return Composite(ZPlus(epsilon), dense, None, epsilon)
    if name == "epsilon_plus_flat":
        return Composite(ZPlus(epsilon), dense, Flat(epsilon), epsilon)
    if name == "epsilon_alpha2_beta1_flat":
        return Composite(AlphaBeta(2.0, 1.0, epsilon), dense, Flat(epsilon), epsilon)
    if name == "epsilon_gamma_box":
        if bounds is None:
            raise ValueError("epsilon_gamma_box needs the input's bounds")
        return Composite(Gamma(gamma, epsilon), dense, ZBox(bounds[0], bounds[1], epsilon), epsilon)
    raise ValueError(f"unknown composite {name!r}; known: {', '.join(COMPOSITES)}")
