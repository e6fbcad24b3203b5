"""A model is data: the record from which `GET /v1/models` and request validation are derived."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from core.errors import Invalid


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


class ModelCost(BaseModel):
    """What one image costs the model at its input size (`input`), from the shapes of its tensors (`models.cost`)."""

    flops: int = Field(description="floating-point operations an image: 2 × macs, plus one an output element of "
                       "every other node")
    macs: int = Field(description="multiply-accumulates of its Conv, Gemm and MatMul nodes (what papers call a "
                      "CNN's FLOPs)")
    activation_bytes: int = Field(description="bytes of every tensor the graph computes for one image (weights "
                                  "excepted): an upper bound of a forward pass's memory")


CropSize = Annotated[list[Annotated[int, Field(gt=0, le=4096)]], Field(min_length=2, max_length=2)]


class Preprocess(BaseModel):
    """How a decoded 8-bit image becomes the model's input tensor.

    `x = (pixel * scale - mean) / std` per channel, channels in `color` order. The image is first
    resized so its short side is `resize` pixels (bicubic) and centre-cropped to the model's input
    size, with torchvision's `Resize(resize)` + `CenterCrop` arithmetic (`core.preprocessing.placement`; where
    the crop is larger than the resized image it is padded with black, as `CenterCrop` pads); with
    `resize` null, or `crop` false, it is resized straight to the input size.

    `crop` is true/false, or the crop size as torchvision's `CenterCrop` writes it (an integer, `[s]`
    or `[h, w]`), kept as `[h, w]` in pixels. A crop size is the model's input size: it must equal
    a fixed input size, and a model with a dynamic input size is used at that size.
    """

    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    scale: float = Field(1.0 / 255.0, gt=0, description="multiplier applied to 0–255 pixel values")
    color: Literal["RGB", "BGR", "L"] = "RGB"
    resize: int | None = Field(None, gt=0, le=4096, description="short side in pixels before the centre crop")
    crop: bool | CropSize = Field(True, description="centre-crop to the input size after `resize`: true/false, or "
                                  "the crop size [h, w] in pixels (an integer is [n, n], as torchvision's "
                                  "CenterCrop writes it), which must be the model's input size")

    @field_validator("crop", mode="before")
    @classmethod
    def _crop_as_torchvision_writes_it(cls, value):
        """`CenterCrop(224)` and `CenterCrop([224])` mean [224, 224]."""
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return [value, value]
        if isinstance(value, (list, tuple)) and len(value) == 1:
            return [value[0], value[0]]
        return value

    def crop_size(self) -> tuple[int, int] | None:
        """(H, W) in pixels when `crop` names a size; None when it is true or false."""
        return None if isinstance(self.crop, bool) else (self.crop[0], self.crop[1])


class ModelInfo(BaseModel):
    """What clients see of a model."""

    id: str
    name: str
    source: Literal["builtin", "upload"]
    input: InputSpec
    preprocess: Preprocess
    num_classes: int | None = Field(description="classes the model scores; null for a model with no class-score "
                                    "output (a backbone or feature extractor: no output of shape N×K or N×K×1×1)")
    labels: list[str] | None = None
    layers: list[Layer] | None = None
    uploaded_at: datetime | None = Field(None, description="when it was uploaded (tells apart two uploads under one "
                                         "name); null for built-in models")
    cost: ModelCost | None = Field(None, description="what one image costs at the input size; null for a model "
                                   "recorded before costs were")


class ModelRecord(ModelInfo):
    """The stored record: what clients see plus where the file is and who owns it."""

    onnx_sha256: str
    input_name: str
    logits_name: str = Field(description="the model's output before any trailing Softmax: its class scores, or "
                             "with `num_classes` null the features it computes")
    owner: str | None = None
    max_batch: int | None = Field(None, description="images ONNX Runtime takes per call (None: any number); "
                                  "1 for files exported with a fixed batch of one")
    created_at: float = 0.0
    size_bytes: int = 0

    def info(self, with_layers: bool) -> ModelInfo:
        data = self.model_dump(include=set(ModelInfo.model_fields))
        if not with_layers:
            data["layers"] = None
        if self.source == "upload" and self.created_at:
            data["uploaded_at"] = datetime.fromtimestamp(self.created_at, tz=UTC)
        return ModelInfo.model_validate(data)

    def layer(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers or [] if layer.name == name), None)

    def require_layer(self, name: str) -> Layer:
        """Layer `name`; 422 `unknown_layer` (with the first 50 layer names) when the model has none."""
        found = self.layer(name)
        if found is None:
            raise Invalid(f"model {self.id!r} has no layer {name!r}", code="unknown_layer",
                          details={"layers": [known.name for known in (self.layers or [])][:50]})
        return found

    def label(self, index: int) -> str | None:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else None

    def require_class_scores(self, needs: str) -> None:
        """Raise 422 `no_class_scores` when the model has no class scores, which `needs` ("predict", "a
        target") needs."""
        if self.num_classes is None:
            raise Invalid(f"{needs[:1].upper()}{needs[1:]} needs class scores, and model {self.id!r} has none (its "
                          "output is not N×classes: a backbone or feature extractor); what needs no class works on "
                          "it: activations, filters, a layer + channel objective, feature_vis, deepdream, inversion, "
                          "texture, style_transfer, dataset kinds", code="no_class_scores")

    def class_index(self, target: int | str) -> int:
        """A class given as index or label → index; raises ValueError when there is none, and 422
        `no_class_scores` when the model scores no classes."""
        self.require_class_scores(f"a target ({target!r})")
        if isinstance(target, int):
            if 0 <= target < self.num_classes:
                return target
            raise ValueError(f"class index {target} is outside 0..{self.num_classes - 1}")
        if self.labels and target in self.labels:
            return self.labels.index(target)
        raise ValueError(f"unknown class label {target!r}")
