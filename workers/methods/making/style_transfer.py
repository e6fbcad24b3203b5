"""Style transfer (Gatys et al. 2016): argmin_x α‖φ_c(x) − φ_c(content)‖²/‖φ_c(content)‖²
+ β Σ_l ‖G_l(x) − G_l(style)‖²/‖G_l(style)‖², starting from the content image."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from core.methods import Made
from workers.methods.mechanics import ascent, objectives
from workers.methods.mechanics.image_making import ascent_of, features, from_uint8, image_param, reporter, space_of, to_uint8


def losses(network, x: torch.Tensor, content_layer: str, content: torch.Tensor,
           grams: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(content loss, style loss) of model-space input x, both relative (see module docstring)."""
    found = features(network, x, [content_layer, *grams])
    content_loss = float(((found[content_layer] - content) ** 2).sum() / (content * content).sum().clamp(min=1e-12))
    style_loss = -float(objectives.gram_match(grams)(found, None))
    return content_loss, style_loss


def run(task) -> Made:
    network, params = task.network, task.params
    space = space_of(network)
    size = (params.size, params.size)
    content_rgb = F.interpolate(space.inverse(task.x), size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    content = features(network, space(content_rgb), [params.content_layer])[params.content_layer]
    style = task.inputs["style_image"].x  # model-input space
    grams = {n: objectives.gram(f) for n, f in features(network, style, params.style_layers).items()}
    objective = (params.content_weight * -objectives.Objective(
        lambda o, logits: ((o[params.content_layer] - content) ** 2).sum() / (content * content).sum().clamp(min=1e-12),
        (params.content_layer,), "content")) + params.style_weight * objectives.gram_match(grams)
    param = image_param(params, size, init=content_rgb if params.parameterisation == "pixel" else None)
    start = losses(network, space(param().detach().to(task.x.device)), params.content_layer, content, grams)
    image, _ = ascent.optimise(network, space, param, objective, ascent_of(params), reporter(task))
    pixels = to_uint8(image)
    content_loss, style_loss = losses(network, space(from_uint8(pixels, image.device)), params.content_layer,
                                      content, grams)
    style_of_content = losses(network, space(content_rgb), params.content_layer, content, grams)[1]
    return Made({"image.png": pixels}, {"content_loss": content_loss, "style_loss": style_loss,
                                        "start_content_loss": start[0], "start_style_loss": start[1],
                                        "content_image_style_loss": style_of_content})
