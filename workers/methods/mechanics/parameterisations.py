"""What gradient ascent optimises: an image parameterisation, and the map from its RGB to the model's input.

Pixels through a sigmoid, or Fourier coefficients scaled by 1/frequency in a decorrelated colour space
(Olah et al., "Feature Visualization", Distill 2017). Every parameterisation gives RGB in [0, 1],
1×3×H×W, H and W in pixels; `ModelSpace` turns that into the model's input space (its scale, mean,
std and colour order), so regularisers mean the same thing for every model.
"""

from __future__ import annotations

import torch
from torch import nn

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


def stacked(images: list[nn.Module]) -> nn.Module:
    """One parameterisation holding several images' parameters along the batch dimension (N×3×H×W out): each
    image keeps the start its own generator gave it, so an image's optimisation does not depend on which
    others share its batch (Adam and the objectives act per image; BatchNorm is in eval mode)."""
    first = images[0]
    name = "spectrum" if isinstance(first, FourierImage) else "logits"
    setattr(first, name, nn.Parameter(torch.cat([getattr(image, name).data for image in images])))
    return first
