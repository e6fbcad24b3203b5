"""Caricature (OpenAI Microscope's caricatures; Lucid's `render_caricature`, Olah et al. 2018): the image that
most amplifies what a layer sees in a photo.

An image is optimised from noise (the kinds' parameterisations: Fourier with decorrelated colour by default) to
maximise dot(φ(image), φ(photo)) × cos(φ(image), φ(photo))^`cossim_pow` at the layer (`objectives.dot_compare`).
The photo rides in every step's batch beside the image, so both pass the same random pad, jitter, scale and
rotation, and the activations are compared position by position on the same grid. Metrics, measured on the 8-bit
PNG a client gets, at the photo's size without transforms: `cosine` of the caricature's activations with the
photo's, and `augmented_cosine`, the mean cosine of `copies` randomly transformed copies of the photo itself
(the same transforms, resized back): a caricature that is closer than those has kept what the layer sees.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.methods import Made
from workers.methods.mechanics import ascent, objectives, transforms
from workers.methods.mechanics.image_making import ascent_of, features, from_uint8, image_param, space_of, to_uint8

COPIES = 4


class WithReference(nn.Module):
    """The photo (a fixed buffer) first, then the image being made: N = 2, one parameterisation for the loop."""

    def __init__(self, photo: torch.Tensor, image: nn.Module):
        super().__init__()
        self.register_buffer("photo", photo)
        self.image = image

    def forward(self) -> torch.Tensor:
        return torch.cat([self.photo, self.image()])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(), b.flatten()
    return float((a @ b) / (a.norm() * b.norm() + 1e-8))


def augmented_cosine(network, space, photo: torch.Tensor, reference: torch.Tensor, layer: str, seed: int,
                     copies: int = COPIES) -> float:
    """Mean cosine between the photo's activations at `layer` (`reference`) and those of `copies` copies of it
    under the standard random transforms (resized back to the photo's size, RGB in [0, 1])."""
    generator = torch.Generator().manual_seed(seed)
    found = []
    for _ in range(copies):
        view = photo
        for transform in transforms.standard_transforms(1):
            view = transform(view, generator)
        view = F.interpolate(view, size=photo.shape[2:], mode="bilinear", align_corners=False)
        found.append(cosine(features(network, space(view), [layer])[layer], reference))
    return sum(found) / len(found)


def run(task) -> Made:
    network, params = task.network, task.params
    space = space_of(network)
    photo = space.inverse(task.x).clamp(0, 1)  # RGB in [0, 1] at the model's input size
    if params.size is not None:
        photo = F.interpolate(photo, size=(params.size, params.size), mode="bilinear", align_corners=False)
    photo = from_uint8(to_uint8(photo), photo.device)  # the photo as 8-bit pixels, as the metrics will see it
    param = WithReference(photo, image_param(params, tuple(photo.shape[2:])))
    settings = ascent_of(params)
    settings.stop_after = params.layer

    def report(step: int, total: int, preview: torch.Tensor | None = None) -> None:
        if preview is not None:
            task.preview(step, to_uint8(preview[1:]))
        task.progress(step, total)

    rgb, value = ascent.optimise(network, space, param, objectives.dot_compare(params.layer, params.cossim_pow),
                                 settings, report)
    pixels = to_uint8(rgb[1:])
    made = features(network, space(from_uint8(pixels, photo.device)), [params.layer])[params.layer]
    seen = features(network, space(photo), [params.layer])[params.layer]
    return Made({"image.png": pixels}, {
        "layer": params.layer, "objective": value, "cosine": cosine(made, seen),
        "augmented_cosine": augmented_cosine(network, space, photo, seen, params.layer, params.seed),
        "width": pixels.shape[1], "height": pixels.shape[0]})
