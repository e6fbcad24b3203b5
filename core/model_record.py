"""A model is data: the record from which `GET /v1/models` and request validation are derived."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ReceptiveField(BaseModel):
    """Where one unit of a layer looks, in input pixels of the model's input tensor.

    The unit at grid position (y, x) sees rows `start + y*stride ... start + y*stride + size - 1`
    (and likewise columns); `start` may be negative where the network pads.
    """

    size: int
    stride: int
    start: int


class Layer(BaseModel):
    """One spatial tensor of the graph: its name (the ONNX tensor name), op and C×H×W shape."""

    name: str
    op: str
    shape: list[int]
    receptive_field: ReceptiveField


class InputSpec(BaseModel):
    channels: int
    height: int
    width: int
    dynamic_size: bool = False


class Preprocess(BaseModel):
    """How a decoded 8-bit image becomes the model's input tensor.

    `x = (pixel * scale - mean) / std` per channel, channels in `color` order. The image is first
    resized so its short side is `resize` pixels (bicubic) and centre-cropped to the model's input
    size; with `resize` null it is resized straight to the input size.
    """

    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    scale: float = Field(1.0 / 255.0, gt=0, description="multiplier applied to 0–255 pixel values")
    color: Literal["RGB", "BGR", "L"] = "RGB"
    resize: int | None = Field(None, gt=0, le=4096, description="short side in pixels before the centre crop")
    crop: bool = Field(True, description="centre-crop to the input size after `resize`")


class ModelInfo(BaseModel):
    """What clients see of a model."""

    id: str
    name: str
    source: Literal["builtin", "upload"]
    input: InputSpec
    preprocess: Preprocess
    num_classes: int
    labels: list[str] | None = None
    layers: list[Layer] | None = None


class ModelRecord(ModelInfo):
    """The stored record: what clients see plus where the file is and who owns it."""

    onnx_sha256: str
    input_name: str
    logits_name: str = Field(description="tensor holding class scores (before any trailing Softmax)")
    owner: str | None = None
    max_batch: int | None = Field(None, description="images ONNX Runtime takes per call (None: any number); "
                                  "1 for files exported with a fixed batch of one")
    created_at: float = 0.0
    size_bytes: int = 0

    def info(self, with_layers: bool) -> ModelInfo:
        data = self.model_dump(include=set(ModelInfo.model_fields))
        if not with_layers:
            data["layers"] = None
        return ModelInfo.model_validate(data)

    def layer(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers or [] if layer.name == name), None)

    def label(self, index: int) -> str | None:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else None

    def class_index(self, target: int | str) -> int:
        """A class given as index or label → index; raises ValueError when there is none."""
        if isinstance(target, int):
            if 0 <= target < self.num_classes:
                return target
            raise ValueError(f"class index {target} is outside 0..{self.num_classes - 1}")
        if self.labels and target in self.labels:
            return self.labels.index(target)
        raise ValueError(f"unknown class label {target!r}")
