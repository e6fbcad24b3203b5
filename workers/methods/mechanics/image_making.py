"""What the image-making kinds share beyond the ascent loop: 8-bit pixels, params to loop, previews.

Pixels are RGB: uint8 0–255 in arrays (H×W×3), float 0–1 in tensors (1×3×H×W). What a method
returns is a `core.methods.Made`."""

from __future__ import annotations

import numpy as np
import torch

from core.methods import Network
from workers.methods.mechanics import ascent, parameterisations, transforms


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """1×3×H×W RGB in [0, 1] → H×W×3 uint8 (what the PNG will hold)."""
    return (rgb[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def from_uint8(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """H×W×3 uint8 → 1×3×H×W RGB in [0, 1] on `device` (to measure what a client will get)."""
    return torch.from_numpy(pixels).to(device).permute(2, 0, 1)[None].float() / 255.0


def image_param(params, size: tuple[int, int], init: torch.Tensor | None = None) -> torch.nn.Module:
    """The parameterisation a kind's params ask for, seeded (`init`: RGB in [0, 1] for pixels)."""
    generator = torch.Generator().manual_seed(params.seed)
    if params.parameterisation == "fourier":
        return parameterisations.FourierImage(size, generator=generator)
    return parameterisations.PixelImage(size, init=None if init is None else init.cpu(), generator=generator)


def ascent_of(params) -> ascent.Ascent:
    """Loop settings from `RenderParams`."""
    regularisers = ascent.Regularisers(l2=params.l2, tv=params.tv, tv_beta=params.tv_beta,
                                       blur_every=params.blur_every, blur_sigma=params.blur_sigma,
                                       clip_norm_pct=params.clip_norm_pct)
    return ascent.Ascent(steps=params.steps, lr=params.lr, transforms=transforms.standard_transforms(params.transforms),
                         regularisers=regularisers, seed=params.seed, preview_every=params.preview_every)


def reporter(task) -> ascent.Reporter:
    """progress(step, total, preview=tensor) for `ascent.optimise`, forwarding previews as uint8."""
    def report(step: int, total: int, preview: torch.Tensor | None = None) -> None:
        if preview is not None:
            task.preview(step, to_uint8(preview))
        task.progress(step, total)
    return report


def space_of(network: Network) -> parameterisations.ModelSpace:
    """The network's model-space map, on the network's device."""
    device = next(network.module.parameters()).device
    return parameterisations.ModelSpace(network.record).to(device)


@torch.no_grad()
def features(network: Network, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """Outputs of `layers` for model-space input `x` (one forward pass)."""
    with ascent.capture(network, layers) as seen:
        network.module(x)
    return dict(seen.outputs)
