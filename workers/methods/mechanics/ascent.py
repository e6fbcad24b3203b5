"""The gradient-ascent loop that makes images: `optimise`, its settings, its regularisers, layer capture.

The loop and the redirected rectifier gradient at a blank start follow Olah et al., "Feature
Visualization" (Distill 2017); the regularisers are Simonyan et al. 2014 (L2 from grey), Mahendran &
Vedaldi 2015 (TV^β) and Yosinski et al. 2015 (blur, small-norm clipping). What the loop takes lives
beside it: `parameterisations` (pixel and Fourier images, the model-space map), `objectives` (values
that add and scale) and `transforms` (pad, jitter, scale, rotate). Images here are RGB in [0, 1]
(N×3×H×W, sides in pixels). Every step is exactly one forward and one backward pass; tensors stay on
the device and nothing is copied to the host except the small previews. Every hook and rectifier swap
is undone in `finally` as soon as the loop ends, whether it finishes or raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from core.methods import Network
from workers.methods.mechanics.backprop import forwards_swapped, is_rectifier
from workers.methods.mechanics.objectives import Objective
from workers.methods.mechanics.parameterisations import ModelSpace, PixelImage
from workers.methods.mechanics.transforms import Transform

# ---------------------------------------------------------------- regularisers


def total_variation(image: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """TV^β of Mahendran & Vedaldi (2015): mean over pixels of ((dx² + dy²))^(β/2)."""
    dx = image[:, :, :-1, 1:] - image[:, :, :-1, :-1]
    dy = image[:, :, 1:, :-1] - image[:, :, :-1, :-1]
    return ((dx * dx + dy * dy + 1e-8) ** (beta / 2)).mean()


def l2_decay(image: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the pixels from mid-grey (Simonyan et al. 2014's L2 penalty)."""
    return ((image - 0.5) ** 2).mean()


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with σ in pixels (Yosinski et al. 2015 blur every few steps)."""
    if sigma <= 0.05:
        return image
    radius = max(1, int(3 * sigma))
    taps = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-taps ** 2 / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, [radius, radius, radius, radius], mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


@dataclass
class Regularisers:
    """Weights and schedules of the regularisers (all optional; 0 switches one off).

    `l2` and `tv` are added to the loss; `blur_every`/`blur_sigma` blur pixel images in place with σ
    decaying linearly to 0 by the last step; `clip_norm_pct` sets pixels whose colour-norm deviation from
    grey is in the lowest percentile back to grey (Yosinski et al. 2015's small-norm clipping).
    """

    l2: float = 0.0
    tv: float = 0.0
    tv_beta: float = 2.0
    blur_every: int = 0
    blur_sigma: float = 0.0
    clip_norm_pct: float = 0.0

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        total = image.new_zeros(())
        if self.l2:
            total = total + self.l2 * l2_decay(image)
        if self.tv:
            total = total + self.tv * total_variation(image, self.tv_beta)
        return total

    @torch.no_grad()
    def project(self, param: nn.Module, step: int, steps: int) -> None:
        """Between steps: blur and norm-clipping act on the pixels of a `PixelImage` directly."""
        if not isinstance(param, PixelImage):
            return
        image = torch.sigmoid(param.logits)
        changed = False
        if self.blur_every and step % self.blur_every == 0 and self.blur_sigma > 0:
            image = gaussian_blur(image, self.blur_sigma * (1 - step / max(steps, 1)))
            changed = True
        if self.clip_norm_pct > 0:
            norms = (image - 0.5).norm(dim=1, keepdim=True)
            cut = torch.quantile(norms.flatten(), self.clip_norm_pct / 100.0)
            image = torch.where(norms < cut, torch.full_like(image, 0.5), image)
            changed = True
        if changed:
            param.logits.copy_(torch.logit(image.clamp(1e-3, 1 - 1e-3)))


# ---------------------------------------------------------------- feature capture


class Capture:
    """Forward hooks that record the outputs of named layers during one forward pass."""

    def __init__(self):
        self.outputs: dict[str, torch.Tensor] = {}


class StopForward(Exception):
    """Raised by the hook of the deepest layer an objective reads, so the rest of the forward pass is skipped."""


@contextlib.contextmanager
def capture(network: Network, layers: Sequence[str], stop_after: str | None = None) -> Iterator[Capture]:
    """Hook `layers` of `network`; with `stop_after`, that layer's hook raises `StopForward` once it has
    recorded its output (an objective that reads no logits needs nothing deeper). Every hook is removed in
    `finally`, also when a later layer is unknown."""
    seen = Capture()
    handles = []

    def record(name: str, out: torch.Tensor) -> None:
        seen.outputs[name] = out
        if name == stop_after:
            raise StopForward

    try:
        for name in dict.fromkeys([*layers, *([stop_after] if stop_after else [])]):
            module = network.layer_module(name)
            handles.append(module.register_forward_hook(lambda _m, _i, out, name=name: record(name, out)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------- rectifiers at a blank start


class _RedirectedRectifier(torch.autograd.Function):
    """clamp(x, low, high) whose gradient, where the plain one is zero for a whole sample, is
    "redirected": passed wherever it would move x back into the active range (Olah et al. 2017's
    redirected ReLU). A blank start then still has a direction to climb in."""

    @staticmethod
    def forward(ctx, x, low: float, high: float):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        inside = (x > ctx.low) & (x < ctx.high)
        plain = grad * inside
        blocked = ~plain.flatten(1).any(dim=1)
        if not bool(blocked.any()):  # every sample has a gradient: nothing to redirect (the common case)
            return plain, None, None
        # Descent moves x by −grad: below the range it must rise (grad < 0), above it fall (grad > 0).
        towards = inside | ((x <= ctx.low) & (grad < 0)) | ((x >= ctx.high) & (grad > 0))
        return torch.where(blocked.view(-1, *[1] * (x.dim() - 1)), grad * towards, plain), None, None


@contextlib.contextmanager
def redirected_rectifiers(module: nn.Module) -> Iterator[None]:
    """Give every ReLU / ReLU6 / Clip-at-0 module the redirected gradient; undone in `finally`."""
    def redirected(sub: nn.Module):
        low, high = (sub.min_val, sub.max_val) if isinstance(sub, nn.Hardtanh) else (0.0, float("inf"))
        return lambda x: _RedirectedRectifier.apply(x, low, high)
    with forwards_swapped((sub, redirected(sub)) for sub in module.modules()
                          if is_rectifier(sub) and not isinstance(sub, nn.LeakyReLU)):
        yield


# ---------------------------------------------------------------- the loop


@dataclass
class Ascent:
    """Settings of one optimisation run (`lr`: Adam's, on the parameterisation's parameters)."""

    steps: int = 256
    lr: float = 0.05
    transforms: list[Transform] = field(default_factory=list)
    regularisers: Regularisers = field(default_factory=Regularisers)
    seed: int = 0
    preview_every: int = 0  # steps between previews (0: none)
    redirect_steps: int = 16  # first steps with redirected rectifier gradients (a blank start has dead units)
    stop_after: str | None = None  # the deepest layer the objective reads, when it reads no logits


Reporter = Callable[..., None]
"""reporter(step, total, preview=None | tensor N×3×H×W RGB in [0, 1]): after each step; raises to stop."""


def optimise(network: Network, space: ModelSpace, param: nn.Module, objective: Objective, ascent: Ascent,
             progress: Reporter | None = None) -> tuple[torch.Tensor, float]:
    """Maximise `objective` over `param`'s image; returns (RGB image in [0, 1], last objective value).

    Each step: image → transforms → model space → one forward (hooks capture the objective's
    layers) → loss = −objective + regularisers → one backward → Adam step. The network's weights
    are frozen at load (`workers.networks`), so only the image receives gradients. Hooks and the
    rectifier swap are entered inside one `with`: if any of them fails, the ones already made are
    undone before the error leaves.
    """
    device = next(network.module.parameters()).device
    param = param.to(device)
    generator = torch.Generator().manual_seed(ascent.seed)
    optimiser = torch.optim.Adam(param.parameters(), lr=ascent.lr)
    value = torch.zeros(())
    with capture(network, objective.layers, ascent.stop_after) as seen, contextlib.ExitStack() as redirect:
        redirect.enter_context(redirected_rectifiers(network.module))
        for step in range(1, ascent.steps + 1):
            if step == ascent.redirect_steps + 1:
                redirect.close()  # units are alive by now: back to the plain (cheaper) rectifier gradient
            optimiser.zero_grad(set_to_none=True)
            image = param()
            view = image
            for transform in ascent.transforms:
                view = transform(view, generator)
            try:
                logits = network.module(space(view))
                logits = logits.reshape(logits.shape[0], -1)
            except StopForward:
                logits = None  # the objective reads layers only, all of them recorded by now
            value = objective(seen.outputs, logits)
            (ascent.regularisers.loss(image) - value).backward()
            optimiser.step()
            ascent.regularisers.project(param, step, ascent.steps)
            if progress is not None:
                wants_preview = ascent.preview_every and step % ascent.preview_every == 0
                progress(step, ascent.steps, preview=param().detach() if wants_preview else None)
    with torch.no_grad():
        return param().detach(), float(value.detach())
