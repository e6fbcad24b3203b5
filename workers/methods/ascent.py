"""Images made by gradient ascent: one loop over an image parameterisation, composable objectives,
regularisers and robustness transforms (Olah et al., "Feature Visualization", Distill 2017;
Yosinski et al. 2015; Mahendran & Vedaldi 2015; Simonyan et al. 2014).

Images here are RGB in [0, 1] (N×3×H×W); `ModelSpace` turns them into the model's input space
(its scale, mean, std and colour order), so regularisers mean the same thing for every model.
Every step is exactly one forward and one backward pass; tensors stay on the device and nothing
is copied to the host except the small previews.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from core.model_record import ModelRecord

# Square root of ImageNet's colour covariance (Olah et al.): decorrelated → RGB.
COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_SQRT = COLOR_SQRT / COLOR_SQRT.norm(dim=0).max()


class ModelSpace(nn.Module):
    """RGB in [0, 1] → the model's input tensor: `(rgb * 255 * scale − mean) / std`, colour order."""

    def __init__(self, record: ModelRecord):
        super().__init__()
        pre = record.preprocess
        channels = record.input.channels
        self.grey = channels == 1 or pre.color == "L"
        self.bgr = pre.color == "BGR"
        self.register_buffer("mean", torch.tensor(pre.mean[:channels]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std[:channels]).view(1, -1, 1, 1))
        self.factor = 255.0 * pre.scale

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if self.grey:
            rgb = (rgb * torch.tensor([0.299, 0.587, 0.114], device=rgb.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif self.bgr:
            rgb = rgb.flip(1)
        return (rgb * self.factor - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * self.std + self.mean) / self.factor
        if self.grey:
            return rgb.expand(-1, 3, -1, -1)
        return rgb.flip(1) if self.bgr else rgb


# ---------------------------------------------------------------- parameterisations

class PixelImage(nn.Module):
    """Plain pixels, kept in [0, 1] through a sigmoid; `init` (RGB in [0, 1]) or small noise."""

    def __init__(self, size: tuple[int, int], init: torch.Tensor | None = None, noise: float = 0.1,
                 generator: torch.Generator | None = None):
        super().__init__()
        if init is None:
            logits = torch.randn(1, 3, *size, generator=generator) * noise
        else:
            logits = torch.logit(init.clamp(1e-3, 1 - 1e-3))
        self.logits = nn.Parameter(logits)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


class FourierImage(nn.Module):
    """An image whose parameters are its Fourier coefficients, scaled by 1/frequency, in a
    decorrelated colour space (Olah et al. 2017): ascent then favours natural-looking images."""

    def __init__(self, size: tuple[int, int], sd: float = 0.01, decay: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        height, width = size
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        self.register_buffer("scale", (1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay))
        self.spectrum = nn.Parameter(torch.randn(1, 3, *freqs.shape, 2, generator=generator) * sd)
        self.size = size

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfftn(spectrum, s=self.size, norm="ortho") / 4.0
        image = torch.einsum("nchw,dc->ndhw", image, COLOR_SQRT.to(image.device))
        return torch.sigmoid(image)


# ---------------------------------------------------------------- transforms (robustness)

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def pad(pixels: int, value: float = 0.5) -> Transform:
    return lambda x, gen: F.pad(x, [pixels] * 4, value=value)


def jitter(pixels: int) -> Transform:
    """Shift the image by up to `pixels` in each direction (a random crop of the padded image)."""
    def apply(x, gen):
        dy, dx = _randint(0, pixels, gen), _randint(0, pixels, gen)
        return x[:, :, dy: x.shape[2] - pixels + dy, dx: x.shape[3] - pixels + dx]
    return apply


def random_scale(factors: Sequence[float]) -> Transform:
    def apply(x, gen):
        factor = factors[_randint(0, len(factors) - 1, gen)]
        size = [max(8, round(s * factor)) for s in x.shape[2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return apply


def random_rotate(degrees: Sequence[float]) -> Transform:
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


# ---------------------------------------------------------------- feature capture and objectives

class Capture:
    """Forward hooks that record the outputs of named layers during one forward pass."""

    def __init__(self):
        self.outputs: dict[str, torch.Tensor] = {}


@contextmanager
def capture(network, layers: Sequence[str]):
    """Hook `layers` of `network` (a `workers.networks.Network`); hooks removed in `finally`."""
    seen = Capture()
    handles = []
    try:
        for name in dict.fromkeys(layers):
            module = network.layer_module(name)
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, name=name: seen.outputs.__setitem__(name, out)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


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
        return Objective(lambda o, l: self(o, l) + other(o, l), self.layers + other.layers, f"{self.name}+{other.name}")

    def __mul__(self, weight: float) -> Objective:
        return Objective(lambda o, l: weight * self(o, l), self.layers, f"{weight}*{self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0


def class_logit(index: int) -> Objective:
    return Objective(lambda o, logits: logits[:, index].mean(), (), f"logit[{index}]")


def channel(layer: str, index: int) -> Objective:
    """Mean activation of one channel over the layer's grid (and the batch)."""
    return Objective(lambda o, l: o[layer][:, index].mean(), (layer,), f"{layer}:{index}")


def neuron(layer: str, index: int, position: tuple[int, int] | None = None) -> Objective:
    """One unit: channel `index` at grid `position` (default the centre of whatever grid the pass has)."""
    def value(o, l):
        grid = o[layer][:, index]
        y, x = position if position is not None else (grid.shape[1] // 2, grid.shape[2] // 2)
        return grid[:, min(y, grid.shape[1] - 1), min(x, grid.shape[2] - 1)].mean()
    return Objective(value, (layer,), f"{layer}:{index}@{position or 'centre'}")


def dream(layer: str, index: int | None = None) -> Objective:
    """DeepDream's L2 objective: mean square of the layer's (or one channel's) activations."""
    def value(o, l):
        acts = o[layer] if index is None else o[layer][:, index]
        return (acts * acts).mean()
    return Objective(value, (layer,), f"dream({layer})")


def feature_match(layer: str, target: torch.Tensor) -> Objective:
    """−‖φ(x) − φ₀‖² / ‖φ₀‖² (Mahendran & Vedaldi 2015): maximised by reproducing the features."""
    norm = (target * target).sum().clamp(min=1e-12)
    return Objective(lambda o, l: -((o[layer] - target) ** 2).sum() / norm, (layer,), f"match({layer})")


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of N×C×H×W features, normalised by H×W: N×C×C (Gatys et al. 2015)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def gram_match(targets: dict[str, torch.Tensor], weights: dict[str, float] | None = None) -> Objective:
    """−Σ_l w_l ‖G_l(x) − G_l⁰‖² / ‖G_l⁰‖² over layers (texture and style losses)."""
    weights = weights or {name: 1.0 for name in targets}

    def value(o, l):
        total = 0.0
        for name, target in targets.items():
            total = total + weights[name] * ((gram(o[name]) - target) ** 2).sum() / (target * target).sum().clamp(min=1e-12)
        return -total
    return Objective(value, tuple(targets), "gram")


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
        # Descent moves x by −grad: below the range it must rise (grad < 0), above it fall (grad > 0).
        towards = inside | ((x <= ctx.low) & (grad < 0)) | ((x >= ctx.high) & (grad > 0))
        blocked = plain.flatten(1).norm(dim=1) == 0
        return torch.where(blocked.view(-1, *[1] * (x.dim() - 1)), grad * towards, plain), None, None


@contextmanager
def redirected_rectifiers(module: nn.Module):
    """Give every ReLU / ReLU6 / Clip-at-0 module the redirected gradient; undone in `finally`."""
    from workers.methods.backprop import is_rectifier

    swapped = []
    try:
        for sub in module.modules():
            if is_rectifier(sub) and not isinstance(sub, nn.LeakyReLU):
                low, high = (sub.min_val, sub.max_val) if isinstance(sub, nn.Hardtanh) else (0.0, float("inf"))
                sub.forward = lambda x, low=low, high=high: _RedirectedRectifier.apply(x, low, high)
                swapped.append(sub)
        yield
    finally:
        for sub in swapped:
            del sub.forward  # back to the class's own forward


# ---------------------------------------------------------------- the loop

@dataclass
class Ascent:
    """Settings of one optimisation run."""

    steps: int = 256
    lr: float = 0.05
    transforms: list[Transform] = field(default_factory=list)
    regularisers: Regularisers = field(default_factory=Regularisers)
    seed: int = 0
    preview_every: int = 0  # steps between previews (0: none)
    redirect_steps: int = 16  # first steps with redirected rectifier gradients (a blank start has dead units)


Progress = Callable[..., None]  # progress(step, total, preview=None | tensor N×3×H×W in [0, 1])


def optimise(network, space: ModelSpace, param: nn.Module, objective: Objective, ascent: Ascent,
             progress: Progress | None = None) -> tuple[torch.Tensor, float]:
    """Maximise `objective` over `param`'s image; returns (RGB image in [0, 1], last objective value).

    Each step: image → transforms → model space → one forward (hooks capture the objective's
    layers) → loss = −objective + regularisers → one backward → Adam step. The network's weights
    are frozen at load (`workers.networks`), so only the image receives gradients.
    """
    device = next(network.module.parameters()).device
    param = param.to(device)
    generator = torch.Generator().manual_seed(ascent.seed)
    optimiser = torch.optim.Adam(param.parameters(), lr=ascent.lr)
    value = torch.zeros(())
    redirect = contextlib.ExitStack()
    redirect.enter_context(redirected_rectifiers(network.module))
    with capture(network, objective.layers) as seen, redirect:
        for step in range(1, ascent.steps + 1):
            if step == ascent.redirect_steps + 1:
                redirect.close()  # units are alive by now: back to the plain (cheaper) rectifier gradient
            optimiser.zero_grad(set_to_none=True)
            image = param()
            view = image
            for transform in ascent.transforms:
                view = transform(view, generator)
            logits = network.module(space(view))
            value = objective(seen.outputs, logits.reshape(logits.shape[0], -1))
            (ascent.regularisers.loss(image) - value).backward()
            optimiser.step()
            ascent.regularisers.project(param, step, ascent.steps)
            if progress is not None:
                wants_preview = ascent.preview_every and step % ascent.preview_every == 0
                progress(step, ascent.steps, preview=param().detach() if wants_preview else None)
    with torch.no_grad():
        return param().detach(), float(value.detach())
