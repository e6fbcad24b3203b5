"""What gradient ascent maximises: small objective values that add and scale like numbers.

`channel("a", 3) + 0.5 * neuron("b", 7)`, as in lucid (Olah et al., "Feature Visualization", Distill
2017); class logits (Simonyan et al. 2014), DeepDream's L2 (Mordvintsev et al. 2015), feature
matching (Mahendran & Vedaldi 2015) and Gram matching (Gatys et al. 2015, 2016). An objective reads
the outputs of the layers it names (captured by forward hooks) and the N×classes logits, and returns
a scalar in the units of those activations or logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Objective:
    """A value to maximise from one forward pass: `fn(layer outputs, logits) -> scalar`.

    Objectives compose like numbers: `channel("a", 3) + 0.5 * neuron("b", 7)`.
    """

    fn: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
    layers: tuple[str, ...] = ()
    name: str = "objective"

    def __call__(self, outputs, logits):
        return self.fn(outputs, logits)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda o, logits: self(o, logits) + other(o, logits), self.layers + other.layers,
                         f"{self.name}+{other.name}")

    def __mul__(self, weight: float) -> Objective:
        return Objective(lambda o, logits: weight * self(o, logits), self.layers, f"{weight}*{self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0


def class_logit(index: int) -> Objective:
    """The logit (not the probability) of class `index`, averaged over the batch."""
    return Objective(lambda o, logits: logits[:, index].mean(), (), f"logit[{index}]")


def channel(layer: str, index: int) -> Objective:
    """Mean activation of one channel over the layer's grid (and the batch)."""
    return Objective(lambda o, logits: o[layer][:, index].mean(), (layer,), f"{layer}:{index}")


def neuron(layer: str, index: int, position: tuple[int, int] | None = None) -> Objective:
    """One unit: channel `index` at grid `position` (default the centre of whatever grid the pass has)."""
    def value(o, logits):
        grid = o[layer][:, index]
        y, x = position if position is not None else (grid.shape[1] // 2, grid.shape[2] // 2)
        return grid[:, min(y, grid.shape[1] - 1), min(x, grid.shape[2] - 1)].mean()
    return Objective(value, (layer,), f"{layer}:{index}@{position or 'centre'}")


def dream(layer: str, index: int | None = None) -> Objective:
    """DeepDream's L2 objective: mean square of the layer's (or one channel's) activations."""
    def value(o, logits):
        acts = o[layer] if index is None else o[layer][:, index]
        return (acts * acts).mean()
    return Objective(value, (layer,), f"dream({layer})")


def feature_match(layer: str, target: torch.Tensor) -> Objective:
    """−‖φ(x) − φ₀‖² / ‖φ₀‖² (Mahendran & Vedaldi 2015): maximised by reproducing the features."""
    norm = (target * target).sum().clamp(min=1e-12)
    return Objective(lambda o, logits: -((o[layer] - target) ** 2).sum() / norm, (layer,), f"match({layer})")


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of N×C×H×W features, normalised by H×W: N×C×C (Gatys et al. 2015)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def gram_match(targets: dict[str, torch.Tensor], weights: dict[str, float] | None = None) -> Objective:
    """−Σ_l w_l ‖G_l(x) − G_l⁰‖² / ‖G_l⁰‖² over layers (texture and style losses)."""
    weights = weights or {name: 1.0 for name in targets}

    def value(o, logits):
        total = 0.0
        for name, target in targets.items():
            norm = (target * target).sum().clamp(min=1e-12)
            total = total + weights[name] * ((gram(o[name]) - target) ** 2).sum() / norm
        return -total
    return Objective(value, tuple(targets), "gram")


# ---------------------------------------------------------------- one objective per image of a batch


def channel_each(layer: str, channels: torch.Tensor) -> Objective:
    """Image i maximises the mean of channel `channels[i]` (summed over the batch, so each image's gradient
    is its own channel's): many channels' feature visualizations in one pass."""
    def value(o, logits):
        acts = o[layer]
        picked = acts[torch.arange(acts.shape[0], device=acts.device), channels.to(acts.device)]
        return picked.mean(dim=(1, 2)).sum()
    return Objective(value, (layer,), f"{layer}:each")


def _dot_cos(vecs: torch.Tensor, refs: torch.Tensor, cossim_pow: float) -> torch.Tensor:
    """Σ over rows of dot(vec, ref) × cos(vec, ref)^`cossim_pow`, the cosine clamped at 0.1 from below, for N×D
    `vecs` and N×D (or 1×D, shared) `refs`."""
    dot = (vecs * refs).sum(1)
    cos = dot / (vecs.norm(dim=1) * refs.norm(dim=1) + 1e-8)
    return (dot * cos.clamp(min=0.1) ** cossim_pow).sum()


def direction_each(layer: str, directions: torch.Tensor, cossim_pow: float = 1.0) -> Objective:
    """Image i maximises, at the centre of the layer's grid, the dot product of the activation vector with
    `directions[i]` weighted by their cosine similarity to the power `cossim_pow` (Carter et al. 2019's
    activation-atlas objective): the unit is pushed along the direction, not just anywhere that scores."""
    def value(o, logits):
        acts = o[layer]
        vec = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]
        return _dot_cos(vec, directions.to(vec.device), cossim_pow)
    return Objective(value, (layer,), f"{layer}:direction")


def gram_cosines(acts: torch.Tensor) -> torch.Tensor:
    """N×N cosine similarities of the images' Gram matrices (C×C each) of N×C×H×W activations."""
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
    grams = (flat @ flat.transpose(1, 2)).reshape(acts.shape[0], -1)
    grams = grams / (grams.norm(dim=1, keepdim=True) + 1e-10)
    return grams @ grams.T


def diversity(layer: str, groups: list[list[int]], channels: torch.Tensor, weight: float) -> Objective:
    """Minus Lucid's diversity term within each group of images (the variants of one channel): per image, the
    summed cosine similarity of its Gram matrix with the others' in its group, averaged over the group, times
    `weight` and the group's current channel activation (detached), so that the penalty means the same for a
    weak channel and a strong one."""
    def value(o, logits):
        acts = o[layer]
        sims = gram_cosines(acts)
        picked = acts[torch.arange(acts.shape[0], device=acts.device), channels.to(acts.device)].mean(dim=(1, 2))
        total = sims.new_zeros(())
        for group in groups:
            if len(group) > 1:
                block = sims[group][:, group]
                scale = picked[group].detach().mean().abs().clamp(min=1e-3)
                total = total + weight * scale * (block.sum() - block.diagonal().sum()) / len(group)
        return -total
    return Objective(value, (layer,), f"diversity({layer})")


def dot_compare(layer: str, cossim_pow: float = 1.0) -> Objective:
    """Lucid's caricature objective: every image after the first (the reference, a photo) maximises the dot
    product of its activations at `layer` with the reference's, weighted by their cosine similarity to the power
    `cossim_pow` (clamped at 0.1 from below, as `direction_each`); the reference itself is not moved."""
    def value(o, logits):
        acts = o[layer].flatten(1)
        return _dot_cos(acts[1:], acts[:1].detach(), cossim_pow)
    return Objective(value, (layer,), f"{layer}:caricature")
