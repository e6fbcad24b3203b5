"""Bodies of the job API: the request union built from the kind registry, and the `Job` view."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from core.jobs.status import JobStatus
from core.kinds.kind import Kind, Source
from core.kinds.registry import KINDS
from service.schemas import ImageRef

INPUT_FIELDS = {  # how each input source appears in a request body
    Source.IMAGE: lambda read: (ImageRef | None, Field(None, description=f"{read.description}; omit when sent "
                                                                        f"as multipart part `{read.name}`")),
    Source.DATASET: lambda read: (str, Field(min_length=1, max_length=128, description=read.description))
    if read.required else (str | None, Field(None, min_length=1, max_length=128, description=read.description)),
}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def request_model(kind: Kind) -> type[BaseModel]:
    """The body of `POST /v1/jobs` for one kind: `kind`, `model`, what the kind reads, `params`, `retry`."""
    fields: dict[str, Any] = {
        "kind": (Literal[kind.name], Field(description=kind.summary)),
        "model": (str, Field(min_length=1, max_length=128, description="a model id from `GET /v1/models`")),
        "params": (kind.params, Field(default_factory=kind.params, description="the kind's parameters; "
                                      "omitted ones take their defaults, shown filled in on the returned Job")),
        "retry": (bool, Field(False, description="run the job once more if the worker running it dies "
                                                 "(input errors and timeouts are never retried)")),
    }
    for read in kind.reads:
        fields[read.name] = INPUT_FIELDS[read.source](read)
    return create_model(f"{_camel(kind.name)}Job", __config__=ConfigDict(extra="forbid"), __doc__=kind.summary,
                        **fields)


REQUEST_MODELS = {name: request_model(kind) for name, kind in KINDS.items()}


JobBody = Union[tuple(REQUEST_MODELS.values())]  # noqa: UP007 (a union built from the registry, not an annotation)


class JobRequest(RootModel[Annotated[JobBody, Field(discriminator="kind")]]):
    """`POST /v1/jobs`: one of the kinds, chosen by `kind` (JSON, or multipart with a `spec` part)."""


class Progress(BaseModel):
    step: int = Field(description="steps done")
    total: int = Field(description="steps in all: set when the job starts (`started`) and constant from then on; "
                                   "0 while it is queued")


class ArtifactRef(BaseModel):
    name: str
    media_type: str
    url: str


class JobResult(BaseModel):
    artifacts: list[ArtifactRef]
    metrics: dict[str, Any]


class JobError(BaseModel):
    code: str
    message: str


class JobTiming(BaseModel):
    """Where a job's time went, in milliseconds; null where the job has not got that far."""

    queued: float | None = Field(None, description="from submission until a worker claimed it")
    started: float | None = Field(None, description="from the claim until the method began: network and inputs loaded")
    method: float | None = Field(None, description="the method itself")
    scoring: float | None = Field(None, description="the map's faithfulness scores (`evaluate`); 0 without")
    stored: float | None = Field(None, description="the artifacts encoded and stored, until the job ended")
    total: float | None = Field(None, description="from submission until the job ended")


class Job(BaseModel):
    """A queued computation and, once it has ended, its outcome."""

    model_config = ConfigDict(json_schema_extra={"description": "A job; `params` show every default filled in."})
    id: str
    kind: str
    model: str
    status: JobStatus
    params: dict[str, Any]
    inputs: dict[str, str] = Field(default_factory=dict, description="what the job read, by input name: an image "
                                   "(`image`, `style_image`) as the SHA-256 of its file, whose first 32 hex digits are "
                                   "the id `POST /v1/images` gives that file (however the job named it); `dataset` as "
                                   "the dataset id")
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cached: bool = False
    error: JobError | None = None
    result: JobResult | None = None
    timing: JobTiming | None = Field(None, description="where its time went so far (ms): the split a load test "
                                     "needs besides the end-to-end time; the worker's stages once it has finished")
    events_token: str | None = Field(None, description="opens this job's event stream without the API key, for "
                                     "`EventSource`: `GET /v1/jobs/{id}/events?token=<events_token>`; valid for this "
                                     "job only, for CONVSCOPE_EVENTS_TOKEN_TTL_S seconds (default 600) from when this "
                                     "Job was returned; null in the `end` event")


class JobList(BaseModel):
    jobs: list[Job]
