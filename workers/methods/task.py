"""What a gradient method receives: the network, its input tensors, the kind's params and callbacks.

The runner builds it from the kind's declared inputs (`core.kinds.registry`); the results a method
returns are the types of `core.methods`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from core.kinds.params import Params
from core.methods import (
    ActivationFeed,
    Classify,
    ImageInput,
    LayerForward,
    Network,
    NoUnitCache,
    Preview,
    Progress,
    UnitCache,
    no_preview,
    no_progress,
)


@dataclass(frozen=True)
class TensorImage:
    """An image input as tensors on the network's device.

    `x`: 1×C×H×W, the exact model input (model-input space). `rgb`: 1×3×H×W RGB in [0, 1] at the
    uploaded size, for methods that work at the image's own size (deepdream).
    """

    x: torch.Tensor
    _rgb: torch.Tensor | Callable[[], torch.Tensor]  # or what makes it, on first use (only deepdream reads it)

    @property
    def rgb(self) -> torch.Tensor:
        if callable(self._rgb):
            object.__setattr__(self, "_rgb", self._rgb())
        return self._rgb

    @classmethod
    def of(cls, image: ImageInput, device: torch.device | str) -> TensorImage:
        def rgb() -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(image.pixels)).to(device).permute(2, 0, 1)[None].float() / 255
        return cls(torch.from_numpy(image.x).to(device), rgb)


@dataclass
class Task:
    """One method call.

    `x` is the exact 1×C×H×W tensor of the kind's `image` input (None for kinds that read no image:
    class_model, feature_vis); `inputs` holds every image input by name (`image`, `style_image`).
    `progress(step, total)` is called after each step; it raises to stop the method (cancellation,
    time limit). `batch` is how many images one forward/backward pass may take. `classify` (None where the
    runner gives none) is the model's forward pass on ONNX Runtime, `forward_batch` copies at a time, for kinds
    that score maps (`compare`), and `model` its layers on ONNX Runtime (the forward-only CAMs run inside
    `compare`). Atlases also get the dataset `feed` (when the job names one), the `units` cache and `icon_batch`.
    """

    network: Network
    x: torch.Tensor | None
    params: Params
    progress: Progress = no_progress
    batch: int = 8
    preview: Preview = no_preview  # (step, H×W×3 uint8) for image-making kinds
    inputs: dict[str, TensorImage] = field(default_factory=dict)
    classify: Classify | None = None
    forward_batch: int = 32
    model: LayerForward | None = None
    feed: ActivationFeed | None = None  # a dataset run through the model on ONNX Runtime (atlases)
    units: UnitCache = field(default_factory=NoUnitCache)  # finished atlas units, kept across jobs
    icon_batch: int = 16  # icons an atlas optimises at once when its params do not say
