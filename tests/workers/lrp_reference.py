"""zennit's LRP as the oracle sees it (tests and `bench/attribution.py`): its `Gradient` attributor with the same
composite as convscope's `lrp`, and the canonizers the built-in model needs so that zennit sees every op as a
module (BatchNorm merged, each residual `y + x` a `Sum`). Import zennit first (`tests.oracles.zennit`)."""

from __future__ import annotations

import numpy as np
import torch

ZENNIT = {"epsilon_plus": "EpsilonPlus", "epsilon_plus_flat": "EpsilonPlusFlat",
          "epsilon_gamma_box": "EpsilonGammaBox", "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat"}
EPSILON = 1e-6


def bounds_of(record) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels 0 and 255 through the record's preprocessing, per channel (1×C×1×1)."""
    pre = record.preprocess
    levels = (np.array([0.0, 255.0])[:, None] * pre.scale - np.array(pre.mean)) / np.array(pre.std)
    low, high = (torch.tensor(level, dtype=torch.float32).reshape(1, -1, 1, 1) for level in levels)
    return low, high


def reference(zennit, network, module, x, target: int, name: str, canonizers=()) -> np.ndarray:
    """zennit's relevance at the input for the target's one-hot, every rule's ε and stabiliser at `EPSILON`, the box
    of z^B from `network`'s record."""
    from zennit import composites
    from zennit.attribution import Gradient

    low, high = bounds_of(network.record)
    box = {"low": low, "high": high} if name == "epsilon_gamma_box" else {}
    rules = getattr(composites, ZENNIT[name])(epsilon=EPSILON, stabilizer=EPSILON, canonizers=list(canonizers), **box)
    with Gradient(model=module, composite=rules) as attributor:
        _, relevance = attributor(x.clone(), torch.eye(network.record.num_classes)[[target]])
    return relevance[0].numpy()


def builtin_canonizers(zennit) -> list:
    """What zennit needs to see the built-in as LRP does: BatchNorm merged into the convolution before it, and each
    residual `y + x` as a `Sum` module (zennit's ResNet canonizer, for `MBConvBlock`).

    zennit 0.5.1's merge leaves the BatchNorm's eps, so its "identity" still divides by √(1 + eps): 1 − 1/√1.001
    ≈ 0.05 % per BatchNorm at Lite0's eps of 1e-3, compounding over the network's BatchNorms. Later zennit makes
    the identity exact (var = eps = 0.5 since chr5tphr/zennit#240); the reference does the same, so that it
    explains the model itself."""
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    from models.efficientnet_lite import MBConvBlock

    class ExactMergeBatchNorm(SequentialMergeBatchNorm):
        def register(self, linears, batch_norm):
            super().register(linears, batch_norm)
            self.eps, batch_norm.eps = batch_norm.eps, 0.5
            batch_norm.running_var.data = torch.full_like(batch_norm.running_var, 0.5)

        def remove(self):
            super().remove()
            self.batch_norm.eps = self.eps

    def skip_as_module(block, x):
        y = x
        if block.has_expand:
            y = block._relu0(block._bn0(block._expand_conv(y)))
        y = block._relu1(block._bn1(block._depthwise_conv(y)))
        y = block._bn2(block._project_conv(y))
        return block.canonizer_sum(torch.stack([y, x], dim=-1)) if block.has_skip else y

    def residual_sums(name, module):
        if isinstance(module, MBConvBlock):
            return {"forward": skip_as_module.__get__(module), "canonizer_sum": Sum()}
        return None

    return [ExactMergeBatchNorm(), AttributeCanonizer(residual_sums)]
