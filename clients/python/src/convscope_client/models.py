"""The API's answers as pydantic models, written by hand after `openapi/openapi.json`.

`tests/clients/test_schema_sync.py` holds them to the schema: every property of an operation's answer is a field
here (and nothing else is), fields without a default are required there, and fields the schema lets be null
accept None. Unknown fields a newer service adds are ignored, so an older client keeps working.

`Job` carries the client that made it, so that `job.artifact(name)` and friends need no client argument.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, PrivateAttr

if TYPE_CHECKING:  # pragma: no cover
    import numpy
    from PIL import Image

JobStatus = Literal["queued", "started", "finished", "failed", "canceled"]
ENDED = ("finished", "failed", "canceled")


# Models
class InputSpec(BaseModel):
    channels: int
    height: int
    width: int
    dynamic_size: bool = False


class Preprocess(BaseModel):
    mean: list[float] = []
    std: list[float] = []
    scale: float = 1 / 255
    color: Literal["RGB", "BGR", "L"] = "RGB"
    resize: int | None = None
    crop: bool | list[int] = True


class ReceptiveField(BaseModel):
    """Input pixels the unit at grid (y, x) sees: rows `start + y·stride … + size − 1`, likewise columns."""

    size: int
    stride: int
    start: int


class Layer(BaseModel):
    name: str
    op: str
    shape: list[int]  # [C, H, W]
    receptive_field: ReceptiveField


class ModelCost(BaseModel):
    """What one image costs at the model's input size."""

    macs: int  # multiply-accumulates of its Conv, Gemm and MatMul nodes
    flops: int
    activation_bytes: int  # every tensor the graph computes for one image: a bound of a forward pass's memory


class ModelInfo(BaseModel):
    id: str
    name: str
    source: Literal["builtin", "upload"]
    input: InputSpec
    preprocess: Preprocess
    num_classes: int | None
    labels: list[str] | None = None
    layers: list[Layer] | None = None  # only from `model(id)`
    uploaded_at: datetime | None = None  # None for built-in models
    cost: ModelCost | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


class CircuitInput(BaseModel):
    """A unit of a source layer and its expanded weight window into the asked unit."""

    layer: str
    channel: int
    origin: list[int]  # [y, x] of the window's top-left on the source layer's grid
    weight: float  # the window's sum
    norm: float  # the window's L2 norm, what inputs are ranked by
    weights: list[list[float]]  # kh × kw, signed


class Circuit(BaseModel):
    layer: str
    channel: int
    position: list[int]  # [y, x]: the unit's centre on its layer's grid
    sources: list[str]  # the layers feeding it
    inputs: list[CircuitInput]  # strongest first


# Forward views
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
    map: list[list[float]]  # the target's probability with the patch at each position
    baseline_probability: float
    patch: int
    stride: int


# Images and datasets
class ImageInfo(BaseModel):
    id: str
    width: int
    height: int
    format: str


class Rejected(BaseModel):
    name: str
    reason: str


class DatasetCreated(BaseModel):
    id: str
    name: str | None
    count: int
    rejected: list[Rejected]


class DatasetImage(BaseModel):
    index: int
    name: str
    width: int
    height: int


class DatasetSummary(BaseModel):
    id: str
    name: str | None
    count: int
    created_at: datetime
    expires_at: datetime


class DatasetInfo(DatasetSummary):
    images: list[DatasetImage]
    rejected: list[Rejected]


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


# Service
class AuthStatus(BaseModel):
    keys_required: bool
    key: Literal["not_needed", "missing", "valid", "invalid"]
    tenant: str | None = None


class Held(BaseModel):
    """One quota: how much the key holds now (bytes or a count), and the most it may."""

    held: int
    limit: int


class Usage(BaseModel):
    """What the caller's key holds against its limits."""

    tenant: str | None
    models: Held
    model_bytes: Held
    datasets: Held
    dataset_bytes: Held
    image_bytes: Held
    job_bytes: Held
    queued_jobs: Held
    holds: Held
    running_jobs: int
    max_running_jobs: int | None
    rate_limit_per_s: float | None


# Jobs
class Progress(BaseModel):
    step: int
    total: int  # 0 while queued


class JobError(BaseModel):
    code: str
    message: str


class ArtifactRef(BaseModel):
    name: str
    media_type: str
    url: str


class JobResult(BaseModel):
    artifacts: list[ArtifactRef]
    metrics: dict[str, Any]


class JobTiming(BaseModel):
    """Where a job's time went, milliseconds; None where it has not got that far."""

    queued: float | None = None  # submission until a worker claimed it
    started: float | None = None  # claim until the method began
    method: float | None = None
    scoring: float | None = None  # faithfulness scores (`evaluate`)
    stored: float | None = None  # artifacts encoded and stored
    total: float | None = None  # submission until the end


class Job(BaseModel):
    """A job as the service reports it; `artifact`, `array` and `image` read its files."""

    id: str
    kind: str
    model: str
    status: JobStatus
    params: dict[str, Any]
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cached: bool = False
    events_token: str | None = None
    error: JobError | None = None
    result: JobResult | None = None
    inputs: dict[str, Any] = {}  # what it read, by input name (an image as the SHA-256 of its file)
    timing: JobTiming | None = None
    _client: Any = PrivateAttr(None)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def artifact_names(self) -> list[str]:
        return [artifact.name for artifact in self.result.artifacts] if self.result else []

    def artifact(self, name: str) -> bytes:
        """The artifact's bytes (`GET /v1/jobs/{id}/artifacts/{name}`)."""
        return self._client.artifact(self.id, name)

    def array(self, name: str) -> numpy.ndarray:
        """An `.npy` artifact as a numpy array (needs the `arrays` extra)."""
        return load_npy(self.artifact(name))

    def image(self, name: str) -> Image.Image:
        """A `.png` artifact as a PIL image (needs the `arrays` extra)."""
        return load_image(self.artifact(name))


class AsyncJob(Job):
    """A Job made by `AsyncClient`: the same, with its file readers awaitable."""

    async def artifact(self, name: str) -> bytes:
        return await self._client.artifact(self.id, name)

    async def array(self, name: str) -> numpy.ndarray:
        return load_npy(await self.artifact(name))

    async def image(self, name: str) -> Image.Image:
        return load_image(await self.artifact(name))


class JobList(BaseModel):
    jobs: list[Job]


def load_npy(data: bytes) -> numpy.ndarray:
    import numpy

    return numpy.load(io.BytesIO(data), allow_pickle=False)


def load_image(data: bytes) -> Image.Image:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image
