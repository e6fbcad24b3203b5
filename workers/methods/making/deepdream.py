"""DeepDream (Mordvintsev et al. 2015): gradient ascent on the image itself to amplify what a layer
(or one channel) responds to, octave by octave, at the image's own size.

Each step: random shift (jitter) → one forward → L2 of the layer → one backward → a step of
`step_size` (0–1 pixel units) along the gradient normalised by its mean absolute value. Octaves
run from small to full size; the detail added at one octave is carried up to the next.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from core.methods import Made
from workers.methods.mechanics import ascent, objectives
from workers.methods.mechanics.image_making import features, space_of, to_uint8


def octave_sizes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """Sizes from the smallest octave up to (height, width)."""
    return [(max(16, round(height / scale ** i)), max(16, round(width / scale ** i))) for i in reversed(range(octaves))]


def layer_energy(network, space, rgb: torch.Tensor, layer: str, channel: int | None) -> float:
    return float(objectives.dream(layer, channel)(features(network, space(rgb), [layer]), None))


def run(task) -> Made:
    network, params = task.network, task.params
    space = space_of(network)
    base = task.inputs["image"].rgb  # 1×3×H×W RGB in [0, 1] at the uploaded size
    longest = max(base.shape[2:])
    if longest > params.max_size:
        size = [round(s * params.max_size / longest) for s in base.shape[2:]]
        base = F.interpolate(base, size=size, mode="bilinear", align_corners=False)
    objective = objectives.dream(params.layer, params.channel)
    generator = torch.Generator().manual_seed(params.seed)
    sizes = octave_sizes(*base.shape[2:], params.octaves, params.octave_scale)
    total, done = len(sizes) * params.steps, 0
    detail = torch.zeros_like(base[:, :, : sizes[0][0], : sizes[0][1]])
    image = base
    with ascent.capture(network, [params.layer]) as seen:
        for size in sizes:
            scaled = F.interpolate(base, size=size, mode="bilinear", align_corners=False)
            detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
            image = (scaled + detail).clamp(0, 1)
            for _ in range(params.steps):
                dy, dx = (int(torch.randint(-params.jitter, params.jitter + 1, (1,), generator=generator))
                          for _ in range(2)) if params.jitter else (0, 0)
                shifted = torch.roll(image, (dy, dx), (2, 3)).requires_grad_(True)
                network.module(space(shifted))
                value = objective(seen.outputs, None)
                (grad,) = torch.autograd.grad(value, shifted)
                with torch.no_grad():
                    grad = torch.roll(grad, (-dy, -dx), (2, 3))
                    image = (image + params.step_size * grad / grad.abs().mean().clamp(min=1e-8)).clamp(0, 1)
                done += 1
                if params.preview_every and done % params.preview_every == 0:
                    task.preview(done, to_uint8(image))
                task.progress(done, total)
            detail = image - scaled
    before = layer_energy(network, space, base, params.layer, params.channel)
    after = layer_energy(network, space, image, params.layer, params.channel)
    pixels = to_uint8(image)
    change = float((image - base).abs().mean() * 255)
    return Made({"image.png": pixels}, {"layer": params.layer, "layer_energy_before": before,
                                        "layer_energy_after": after, "mean_abs_change": change,
                                        "width": pixels.shape[1], "height": pixels.shape[0]})
