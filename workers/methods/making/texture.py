"""Texture synthesis (Gatys et al. 2015): an image whose Gram matrices G_l = F_l F_lᵀ / (H·W) at
several layers match the example's, from noise."""

from __future__ import annotations

import torch

from core.methods import Made
from workers.methods.mechanics import ascent, objectives
from workers.methods.mechanics.image_making import ascent_of, features, from_uint8, image_param, reporter, space_of, to_uint8


def gram_loss(network, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> float:
    """Σ_l ‖G_l(x) − G_l⁰‖² / ‖G_l⁰‖² for model-space input x."""
    return -float(objectives.gram_match(targets)(features(network, x, list(targets)), None))


def run(task) -> Made:
    network, params = task.network, task.params
    targets = {name: objectives.gram(f) for name, f in features(network, task.x, params.layers).items()}
    space = space_of(network)
    param = image_param(params, (params.size, params.size))
    start = gram_loss(network, space(param().detach().to(task.x.device)), targets)
    image, _ = ascent.optimise(network, space, param, objectives.gram_match(targets), ascent_of(params), reporter(task))
    pixels = to_uint8(image)
    final = gram_loss(network, space(from_uint8(pixels, image.device)), targets)
    return Made({"image.png": pixels}, {"gram_loss": final, "start_gram_loss": start, "layers": params.layers})
