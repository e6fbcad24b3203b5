"""Feature inversion (Mahendran & Vedaldi 2015): argmin_x ‖φ(x) − φ₀‖² / ‖φ₀‖² + λ·TV^β(x),
reconstructing an image from what one layer keeps of it."""

from __future__ import annotations

import torch

from core.methods import Made
from workers.methods.mechanics import ascent, objectives
from workers.methods.mechanics.image_making import ascent_of, features, from_uint8, image_param, reporter, space_of, to_uint8


def relative_error(found: torch.Tensor, target: torch.Tensor) -> float:
    """‖φ(x) − φ₀‖ / ‖φ₀‖ (not squared)."""
    return float((found - target).norm() / target.norm().clamp(min=1e-12))


def run(task) -> Made:
    network, params = task.network, task.params
    layer = params.layer
    target = features(network, task.x, [layer])[layer]
    space = space_of(network)
    size = tuple(task.x.shape[2:])
    image, value = ascent.optimise(network, space, image_param(params, size), objectives.feature_match(layer, target),
                                   ascent_of(params), reporter(task))
    pixels = to_uint8(image)
    found = features(network, space(from_uint8(pixels, image.device)), [layer])[layer]
    return Made({"image.png": pixels}, {"relative_feature_error": relative_error(found, target),
                                        "objective": value, "layer": layer})
