"""Many small feature visualizations at once: the engine of the atlases.

A batch of icons is one parameterisation with N images (`parameterisations.stacked`), one objective that
gives each image its own target (`objectives.channel_each`, `direction_each`, plus `diversity` within
groups), and the one ascent loop (`ascent.optimise`): every step is one forward and one backward pass for
the whole batch, and the forward stops at the deepest layer the objective reads. Each icon starts from
its own seed (from the params' seed and the icon's key), so an icon does not depend on which others share
its batch: a cached icon is the one a new run would make.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from core.methods import Network
from workers.methods.mechanics import ascent, parameterisations
from workers.methods.mechanics.image_making import ascent_of, space_of

SEED_MIX = 1_000_003


def icon_seed(seed: int, *key: int) -> int:
    """A seed of its own for the icon `key` (channel, variant; or cell y, x) under the params' seed."""
    value = int(seed)
    for part in key:
        value = (value * SEED_MIX + int(part) + 1) % (2**63 - 1)
    return value


def start(parameterisation: str, size: int, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    if parameterisation == "fourier":
        return parameterisations.FourierImage((size, size), generator=generator)
    return parameterisations.PixelImage((size, size), generator=generator)


def batch_size(network: Network, params, default: int) -> int:
    """Icons per batch: the params' `batch`, else on a GPU as many as half its free memory holds (measured with
    one icon), at most 8 × `default`; on the CPU `default` (the worker's setting)."""
    if params.batch:
        return params.batch
    device = next(network.module.parameters()).device
    if device.type != "cuda":
        return default
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    probe = start(params.parameterisation, params.size, 0).to(device)
    network.module(space_of(network)(probe())).float().sum().backward()
    per_icon = max(torch.cuda.max_memory_allocated(device) - before, 1)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(8 * default, free // 2 // per_icon)))


def render(network: Network, params, seeds: Sequence[int], objective: ascent.Objective, stop_after: str,
           report: Callable[..., None] | None = None) -> torch.Tensor:
    """Optimise len(seeds) icons at once for `objective`; returns N×3×H×W RGB in [0, 1]."""
    images = [start(params.parameterisation, params.size, seed) for seed in seeds]
    settings = ascent_of(params)
    settings.stop_after = stop_after
    rgb, _ = ascent.optimise(network, space_of(network), parameterisations.stacked(images), objective, settings, report)
    return rgb


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """N×3×H×W in [0, 1] → N×H×W×3 uint8 (what the PNGs will hold)."""
    return (rgb.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def activations(network: Network, layer: str, pixels: np.ndarray, batch: int = 32) -> torch.Tensor:
    """The layer's N×C×h×w activations for N×H×W×3 uint8 images, as a client's PNGs would give them."""
    device = next(network.module.parameters()).device
    space = space_of(network)
    out = []
    for begin in range(0, len(pixels), batch):
        rgb = torch.from_numpy(np.array(pixels[begin:begin + batch])).to(device).permute(0, 3, 1, 2).float() / 255.0
        with ascent.capture(network, [layer], stop_after=layer) as seen:
            try:
                network.module(space(rgb))
            except ascent.StopForward:
                pass
        out.append(seen.outputs[layer].float())
    return torch.cat(out)


def grid(icons: Sequence[np.ndarray | None], side: int, columns: int | None = None, gap: int = 2,
         background: int = 255) -> np.ndarray:
    """Icons (H×W×3 uint8, None for a gap) in rows of `columns` (default near-square), `gap` pixels apart."""
    count = max(len(icons), 1)
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    canvas = np.full((rows * (side + gap) + gap, columns * (side + gap) + gap, 3), background, np.uint8)
    for index, icon in enumerate(icons):
        if icon is not None:
            r, c = divmod(index, columns)
            top, left = gap + r * (side + gap), gap + c * (side + gap)
            canvas[top:top + side, left:left + side] = icon
    return canvas
