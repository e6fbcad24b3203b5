"""Random robustness transforms applied to the image before each forward pass of gradient ascent.

Pad, jitter, scale and rotate, as in Olah et al., "Feature Visualization" (Distill 2017, lucid's
defaults) and Mordvintsev et al. 2015: an image must keep its effect under small shifts, so ascent
cannot exploit single pixels. A transform maps N×3×H×W RGB in [0, 1] and a seeded generator to a
new tensor; offsets are pixels, angles degrees, scales ratios of the side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def pad(pixels: int, value: float = 0.5) -> Transform:
    """Pad every side by `pixels` with `value` (mid-grey by default)."""
    return lambda x, gen: F.pad(x, [pixels] * 4, value=value)


def jitter(pixels: int) -> Transform:
    """Shift the image by up to `pixels` in each direction (a random crop of the padded image)."""
    def apply(x, gen):
        dy, dx = _randint(0, pixels, gen), _randint(0, pixels, gen)
        return x[:, :, dy: x.shape[2] - pixels + dy, dx: x.shape[3] - pixels + dx]
    return apply


def random_scale(factors: Sequence[float]) -> Transform:
    """Resize (bilinear) by one of `factors`, each side at least 8 pixels."""
    def apply(x, gen):
        factor = factors[_randint(0, len(factors) - 1, gen)]
        size = [max(8, round(s * factor)) for s in x.shape[2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return apply


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate about the centre by one of `degrees`, repeating the border pixels."""
    def apply(x, gen):
        angle = math.radians(degrees[_randint(0, len(degrees) - 1, gen)])
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=x.device, dtype=x.dtype)[None]
        grid = F.affine_grid(theta.expand(x.shape[0], -1, -1), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return apply


def standard_transforms(strength: int = 1) -> list[Transform]:
    """Lucid's default robustness transforms, scaled by `strength` (0: none)."""
    if strength <= 0:
        return []
    return [pad(12 * strength), jitter(8 * strength), random_scale([1 + (i - 5) / 50 for i in range(11)]),
            random_rotate(list(range(-10, 11))), jitter(4 * strength)]
