"""The job as the API and the workers pass it: a `JobSpec` (what to compute, fixed at submission) inside a
`JobRecord` (what has happened to it since). Torch-free.

Both are typed once at the edge: the API builds the spec from the validated request, the store turns the
Redis hash into a record (`JobRecord.from_fields`), and from then on nothing reads a job by string keys. The
hash itself keeps its layout (`core/jobs/records.py`): the spec as one JSON field, the rest one field each.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.jobs.status import ENDED, JobStatus

SAME_COMPUTATION = ("kind", "model", "model_sha256", "inputs", "params", "owner")


class JobSpec(BaseModel):
    """What a job computes and for whom, as submitted: the message from the API to the workers (like rq's `Job`
    arguments, but typed). `inputs` maps each input the kind reads to its reference (an image's content hash, a
    dataset id); `params` are the kind's params, resolved against the model and dumped as JSON."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer API's extra fields do not stop an older worker

    kind: str
    model: str
    model_sha256: str
    inputs: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    owner: str | None = None
    retry: bool = False  # run once more if the worker running it dies
    queue: str | None = None  # the RQ queue it was submitted to: a re-queued attempt goes back there
    time_limit_s: int | None = None  # the limit it was submitted with, whichever process re-queues it
    digest: str = ""  # `computation_digest()`, set by `sealed()`

    def computation_digest(self) -> str:
        """What makes two jobs the same computation: kind, model file, inputs (image bytes, dataset), params, owner."""
        same = self.model_dump(include=set(SAME_COMPUTATION), mode="json")
        return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()

    def sealed(self) -> JobSpec:
        """The spec with its digest filled in (the key of the result cache)."""
        return self.model_copy(update={"digest": self.computation_digest()})


class JobProgress(BaseModel):
    step: int = 0
    total: int = 0  # set when the job starts and constant from then on; 0 while it is queued


class JobFailure(BaseModel):
    """Why a job failed, for the client: a stable code and a sentence (the traceback goes to the log only)."""

    code: str
    message: str


class JobOutcome(BaseModel):
    """What a finished job returned: its artifacts' names and its metrics."""

    artifacts: list[str]
    metrics: dict[str, Any] = Field(default_factory=dict)


class JobStages(BaseModel):
    """Where a finished attempt's time went in its worker, in seconds: `inputs` (from the claim to the method: the
    network and the inputs loaded), `method`, `scoring` (a map's faithfulness scores; 0 without) and `encode`
    (the artifacts encoded; their storing is the rest of the attempt, until `ended_at`)."""

    inputs: float = 0.0
    method: float = 0.0
    scoring: float = 0.0
    encode: float = 0.0


class JobRecord(BaseModel):
    """A job as stored: its spec and what has happened to it. Times are Unix seconds."""

    model_config = ConfigDict(frozen=True)

    id: str
    spec: JobSpec
    status: JobStatus
    attempt: int = 1
    progress: JobProgress = JobProgress()
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    deadline: float | None = None  # started_at + time limit + grace: past it, a live worker's job has timed out
    worker: str | None = None  # the worker that claimed the current attempt
    cached: bool = False  # answered from an earlier finished job's result
    cancel_requested: bool = False
    error: JobFailure | None = None
    result: JobOutcome | None = None
    ready: list[str] = Field(default_factory=list)  # artifacts readable before the job ends
    stray_at: float | None = None  # first seen queued yet neither waiting in a queue nor held by a worker
    stages: JobStages | None = None  # a finished attempt's split, written with its ending

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def owner(self) -> str | None:
        return self.spec.owner

    @classmethod
    def from_fields(cls, job_id: str, fields: dict[str, str]) -> JobRecord:
        """The record from its Redis hash (field → text)."""
        def number(name: str) -> float | None:
            return float(fields[name]) if fields.get(name) else None

        def parsed(name: str):
            return json.loads(fields[name]) if fields.get(name) else None

        worker = fields.get("worker")
        return cls(id=job_id, spec=JobSpec.model_validate_json(fields["spec"]), status=JobStatus(fields["status"]),
                   attempt=int(fields.get("attempt") or 1), progress=JobProgress(**(parsed("progress") or {})),
                   created_at=float(fields["created_at"]), started_at=number("started_at"),
                   ended_at=number("ended_at"), deadline=number("deadline"),
                   worker=worker if worker and worker != "-" else None, cached=fields.get("cached") == "1",
                   cancel_requested="cancel" in fields, error=parsed("error"), result=parsed("result"),
                   ready=parsed("ready") or [], stray_at=number("stray_at"), stages=parsed("stages"))
