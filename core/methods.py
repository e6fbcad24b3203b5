"""What a method receives from the runner and what it gives back: the contract of `workers/methods/`.

Torch-free: methods import these types, torch and numpy, and nothing that reaches Redis, HTTP,
ONNX Runtime sessions or the stores. The runner (`workers/execute.py`) builds the inputs, calls
the method, and encodes whatever it returns (`workers/artifacts.py`, the one place where PNG,
JSON and npy files are made).

    Attribution   attribution kinds        → input.npy, attribution.npy, heatmap.png (and <name>.json per
                                             table, <name>.npy per array: evaluation.json, segments.npy)
    Made          image-making kinds       → input.npy (when an image was read), each image under its
                                             file name (`image.png`, …)
    Output        dataset kinds and others → <name>.png per picture, <name>.json per table,
                                             <name>.npy per array
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from core.model_record import ModelRecord

Progress = Callable[[int, int], None]
"""progress(step, total): called after each step; raises to stop the method (cancel, time limit)."""

Preview = Callable[[int, np.ndarray], None]
"""preview(step, H×W×3 uint8): a glimpse of an image being made, shown to clients as it forms."""


Classify = Callable[[np.ndarray], np.ndarray]
"""classify(N×C×H×W float32 model input) → N×K float32 softmax probabilities: forward passes only (the
runner's runs on ONNX Runtime; callers pass at most their `batch` images at a time)."""


def no_progress(step: int, total: int) -> None:
    """The default progress callback: ignore it."""


def progress_part(progress: Progress, start: int, steps: int, total: int) -> Progress:
    """The progress callback of one part of a job that takes `steps` of its `total` steps, from `start`:
    the part reports (k, steps) and the job sees (start + k, total). A part that reports another count
    passes the mismatch on, so that the runner's check still sees it."""
    def part(step: int, reported: int) -> None:
        progress(start + min(step, reported), total if reported == steps else total - steps + reported)
    return part


def no_preview(step: int, pixels: np.ndarray) -> None:
    """The default preview callback: ignore it."""


class Network(Protocol):
    """The torch side of a model, as gradient methods see it (built by `workers/networks.py`).

    `module`: a float32 eval-mode `torch.nn.Module` on the worker's device, frozen parameters;
    input model-space N×C×H×W, output N×classes logits. `layer_module(name)`: the module whose
    forward output is the record's layer `name` (422 `unknown_layer` when there is none).
    """

    module: Any
    record: ModelRecord

    def layer_module(self, name: str) -> Any: ...


@dataclass(frozen=True)
class ImageInput:
    """An image a job reads, prepared by the one image pipeline (`core.images`).

    `pixels`: H×W×3 uint8 RGB as uploaded (EXIF orientation applied); `fitted`: H×W×3 uint8 after
    the model's resize and crop, what the model sees; `x`: 1×C×H×W float32, the exact model input.
    """

    pixels: np.ndarray
    fitted: np.ndarray
    x: np.ndarray


@dataclass
class FeatureBatch:
    """A batch of dataset images and their activations at the layers asked for."""

    indices: np.ndarray  # dataset indices (int64)
    pixels: np.ndarray  # N×H×W×3 uint8: the images at model input size
    features: dict[str, np.ndarray]  # layer name → N×C×h×w float32


class ActivationFeed(Protocol):
    """A dataset run through the model, as the runner provides it to forward-only methods."""

    def __len__(self) -> int: ...

    def name(self, index: int) -> str:
        """The image's name in the dataset (for display)."""

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) of the image in its own pixels, as decoded (EXIF orientation applied): what
        `core.preprocessing.fit` made the model input from (`core.preprocessing.original_box` maps boxes back to it)."""

    def batches(self, layers: Sequence[str], extra_steps: int = 0) -> Iterator[FeatureBatch]:
        """The whole dataset in batches, with progress after each; `extra_steps`: steps `images` will take."""

    def images(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, H×W×3 uint8 at model input size) of a few images, in index order."""

    def steps_for(self, images: int) -> int:
        """Progress steps that loading `images` images with `images()` will take."""

    def forward(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Activations (N×C×h×w float32) of `layers` for a model-input batch `x` (N×C×H×W), e.g. a query image."""


@dataclass
class DatasetTask:
    """One call of a forward-only dataset method: the model record, its params, the dataset feed and,
    for kinds that also read an image (neighbors), that image."""

    record: ModelRecord
    params: Any
    feed: ActivationFeed
    query: ImageInput | None = None
    threads: int = 1  # CPU threads the method may use beside ONNX Runtime (t-SNE, UMAP, BLAS)


class LayerForward(Protocol):
    """The model on ONNX Runtime as forward-only methods that look inside it see it (the CAMs without gradients):
    logits, a layer's activations (the graph cut after the layer), and the logits computed from given activations
    of a layer onward (the graph cut before it). Batches of at most the task's `batch` inputs; float32 throughout."""

    def logits(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W model inputs → N×K logits."""

    def layer(self, x: np.ndarray, name: str) -> np.ndarray:
        """N×C×H×W model inputs → the N×c×h×w activations of layer `name`."""

    def from_layer(self, layer: str, activations: np.ndarray, x: np.ndarray) -> np.ndarray:
        """N×c×h×w activations of `layer` → N×K logits, the rest of the graph as it would run on the model inputs
        `x` (1×C×H×W or N×C×H×W: what reaches the output without passing through the layer reads them)."""


@dataclass
class ForwardTask:
    """One call of a forward-only method on one image (RISE, Kernel SHAP, the CAMs without gradients): the model
    record, its params, the exact 1×C×H×W model input `x` (float32), `classify` (probabilities of a batch of at
    most `batch` inputs), the progress callback, and `model` (logits and a layer's activations, for the CAMs)."""

    record: ModelRecord
    params: Any
    x: np.ndarray
    classify: Classify
    progress: Progress = no_progress
    batch: int = 32
    model: LayerForward | None = None


@dataclass
class Attribution:
    """An attribution method's output.

    `attribution`: float32, C×H×W in the model's input space, before any absolute value or channel
    reduction (Grad-CAM: 1×h×w at its layer's grid; RISE and Kernel SHAP: 1×H×W). `heat`: h×w in
    [0, 1], what the heatmap shows. `metrics`: JSON-able numbers and names (the class explained, its
    logit, ...). `tables` (JSON-able) and `arrays` (float32): further artifacts by name without suffix
    (`evaluation`, `segments`, `ranking`). `grain`: the (h, w) grid the map was made at, where that is coarser
    than its array (RISE's mask cells); the random maps that faithfulness scores are compared with use it.
    """

    attribution: np.ndarray
    heat: np.ndarray
    metrics: dict = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    grain: tuple[int, int] | None = None


@dataclass
class Made:
    """An image-making method's output: RGB uint8 images (H×W×3) by file name (`image.png`), JSON-able metrics."""

    images: dict[str, np.ndarray]
    metrics: dict = field(default_factory=dict)


@dataclass
class Output:
    """Any other method's output, by artifact name without its suffix: `pictures` (H×W×3 or H×W×4 uint8)
    become PNG files, `tables` (JSON-able values) JSON files, `arrays` npy files."""

    pictures: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


@dataclass
class UnitVisual:
    """What gradient ascent made for one unit of an atlas: its images (H×W×3 uint8; the first is the unit's
    feature visualization, the others its diversity variants) and each image's objective (the unit's mean
    activation on that 8-bit image)."""

    images: list[np.ndarray]
    objectives: list[float]


class UnitCache(Protocol):
    """Finished units of an atlas, kept by the runner across jobs (keyed by model file, layer and params), so a
    second atlas of the same layer computes only new channels and a cancelled one keeps what it made."""

    def get(self, channel: int) -> UnitVisual | None: ...

    def put(self, channel: int, visual: UnitVisual) -> None: ...


class NoUnitCache:
    """A cache that keeps nothing (methods called directly, benchmarks)."""

    def get(self, channel: int) -> UnitVisual | None:
        return None

    def put(self, channel: int, visual: UnitVisual) -> None:
        """Forget it."""
