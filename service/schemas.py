"""Request and response bodies of the HTTP API (pydantic), shared by routes and OpenAPI."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.model_record import ModelInfo


class ImageById(BaseModel):
    """An image uploaded earlier with `POST /v1/images`."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)


class ImageByData(BaseModel):
    """An image file sent inline, base64-encoded."""

    model_config = ConfigDict(extra="forbid")
    data: str = Field(min_length=1)


class ImageInDataset(BaseModel):
    """Image `index` of one of the caller's datasets (`GET /v1/datasets/{id}` lists them; job results name them by
    `image_index`)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(min_length=1, max_length=128, description="a dataset id from `POST /v1/datasets`")
    index: int = Field(ge=0, description="the image's `index` in the dataset")


ImageRef = ImageById | ImageByData | ImageInDataset
Target = int | str
Format = Literal["png", "json", "npy"]


class ViewRequest(BaseModel):
    """Common part of the forward views: the image (or a multipart part `image`)."""

    model_config = ConfigDict(extra="forbid")
    image: ImageRef | None = Field(None, description="omit when the image comes as multipart part `image`")


class PredictRequest(ViewRequest):
    top_k: int = Field(5, ge=1, le=1000, description="how many classes to return")


class ActivationsRequest(ViewRequest):
    layer: str = Field(min_length=1, max_length=512, description="a `name` from the model's layer list")
    channels: list[int] | None = Field(None, max_length=4096, description="channels to show (default all)")
    normalize: Literal["channel", "layer"] = "channel"
    colormap: str = Field("inferno", max_length=64, description="a matplotlib colour map name")
    format: Format | None = Field(None, description="png (default), json (stats) or npy (C×H×W maps)")


class OcclusionRequest(ViewRequest):
    target: Target | None = Field(None, description="class index or label; default the top-1 class")
    patch: int = Field(32, ge=1, le=4096, description="side of the occluding square, input pixels")
    stride: int = Field(8, ge=1, le=4096, description="step between patch positions, input pixels")
    fill: Literal["mean", "zero", "blur"] | float = Field(
        "mean", description="mean: image mean colour; zero: 0 in model-input space; blur; or a 0–255 grey level")
    colormap: str = Field("jet", max_length=64)
    format: Format | None = None


class Prediction(BaseModel):
    index: int
    label: str | None
    probability: float
    logit: float


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class ActivationStats(BaseModel):
    max: list[float]
    mean: list[float]
    fraction_zero: list[float]
    dead_channels: list[int]


class ActivationsResponse(BaseModel):
    layer: str
    shape: list[int]
    channels: list[int]
    stats: ActivationStats


class OcclusionResponse(BaseModel):
    target: int
    label: str | None
    map: list[list[float]]
    baseline_probability: float
    patch: int
    stride: int


class ImageInfo(BaseModel):
    id: str
    width: int
    height: int
    format: str


class ModelList(BaseModel):
    models: list[ModelInfo]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: object | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail

