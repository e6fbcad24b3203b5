"""What a method receives and what an attribution method returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from core.kinds.params import Params
from workers.networks import Network


def no_progress(step: int, total: int) -> None:
    """The default progress callback: ignore it."""


def no_preview(step: int, pixels: np.ndarray) -> None:
    """The default preview callback: ignore it."""


@dataclass
class Task:
    """One method call: the network, the input, the kind's params.

    `x` is the exact 1×C×H×W tensor given to the model (model-input space, on the network's
    device). `progress(step, total)` is called after each step; it raises to stop the method
    (cancellation, time limit). `batch` is how many images one forward/backward pass may take.
    """

    network: Network
    x: torch.Tensor | None  # None for kinds that read no image (class_model, feature_vis)
    params: Params
    progress: Callable[[int, int], None] = no_progress
    batch: int = 8
    image: torch.Tensor | None = None  # 1×3×H×W RGB in [0, 1] at the uploaded size (deepdream)
    style_x: torch.Tensor | None = None  # the style image, model-input space (style_transfer)
    preview: Callable[[int, np.ndarray], None] = no_preview  # (step, H×W×3 uint8) for image-making kinds


@dataclass
class Attribution:
    """An attribution method's output.

    `attribution`: float32, C×H×W in the model's input space, before any absolute value or channel
    reduction (Grad-CAM: 1×h×w at its layer's grid). `heat`: h×w in [0, 1], what the heatmap
    shows. `metrics`: JSON-able numbers and names (the class explained, its logit, ...).
    """

    attribution: np.ndarray
    heat: np.ndarray
    metrics: dict = field(default_factory=dict)
