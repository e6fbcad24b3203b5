"""The RQ entry point: run one attempt of one job and store what it returns.

`run_job(job_id, attempt)` is the only function RQ may call (see `core.jobs.queueing.SafeJob`). It
plans it (model record, params, and the step count the kind declares for them: `Params.total_steps`),
claims it (queued → started, atomically, with progress {0, total}; a job cancelled meanwhile is
skipped), prepares the input with the same image pipeline as the forward views, calls the kind's
method with a progress callback that keeps that total, and also stops the method on cancellation or
at its time limit, publishes an attribution map at once and then scores it when its params ask for it
(`evaluate`, `workers.methods.faithfulness`: forward passes on ONNX Runtime, the job's last steps), and ends the job:

    finished   artifacts stored, result {artifacts, metrics}, spec remembered for the cache
    canceled   DELETE /v1/jobs/{id} was seen at a step
    failed     {code, message}: the client's error codes (4xx kinds), `timeout`, `out_of_memory`,
               or `internal` (the traceback goes to the log only)

Redis errors are not caught: a worker that cannot reach Redis cannot record anything; it
reconnects, and the supervisor sees the job's worker no longer runs it (`worker_lost`).
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import redis
import torch
from PIL import Image
from rq.timeouts import JobTimeoutException

from core import render
from core.errors import ConvscopeError, Invalid, NotFound
from core.jobs.status import JobStatus
from core.jobs.store import JobStore
from core.jobs.supervisor import DEADLINE_GRACE_S, time_limit
from core.jobs.units import RedisUnitCache, unit_key
from core.kinds.params import Params, Workload
from core.kinds.registry import KINDS, Engine, Kind, Source
from core.methods import Attribution, Classify, DatasetTask, ForwardTask, progress_part
from core.model_record import ModelRecord
from core.stores.datasets import Dataset
from models.forward import softmax
from workers.artifacts import artifacts_of, early_artifacts, map_artifacts, table_artifacts
from workers.context import WorkerContext
from workers.inputs import LOADERS, Loading, open_dataset
from workers.methods import faithfulness
from workers.methods.task import Task, TensorImage

log = logging.getLogger("convscope.worker")
PROGRESS_EVERY_S = 0.2


class JobCanceled(Exception):
    """The client cancelled the job; raised from the progress callback."""


class JobTimedOut(Exception):
    """The job passed its time limit; raised from the progress callback."""


_context: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    global _context
    _context = context


class Progress:
    """The callback given to methods: records progress (at most every 0.2 s, and the last step) against
    the job's declared `total`, which never changes: a method reporting another total is a counting bug
    (logged once; the declared total stays). Raises `JobCanceled` / `JobTimedOut` so a method stops at
    its next step."""

    def __init__(self, store: JobStore, job_id: str, deadline: float, total: int):
        self.store, self.job_id, self.deadline, self.total = store, job_id, deadline, total
        self.last, self.mismatch = 0.0, False

    def __call__(self, step: int, total: int) -> None:
        now = time.time()
        if total != self.total and not self.mismatch:
            self.mismatch = True
            log.warning("method reported another progress total than its kind declared",
                        extra={"fields": {"job": self.job_id, "declared": self.total, "reported": total}})
        step = min(step, self.total)
        if now > self.deadline:
            raise JobTimedOut
        if now - self.last >= PROGRESS_EVERY_S or step >= self.total:
            self.last = now
            if self.store.progress(self.job_id, step, self.total):
                raise JobCanceled
        elif self.store.cancel_requested(self.job_id):
            raise JobCanceled


@dataclass(frozen=True)
class Plan:
    """What a job will run with, settled before it is claimed: the model record, its params, its step count
    (`total`, of which the method's own are `method_total`; the runner's scoring takes the rest), and the
    datasets it reads, opened once (their image counts are part of the step count)."""

    record: ModelRecord
    params: Params
    total: int
    datasets: dict[str, Dataset]
    method_total: int


def plan_of(ctx: WorkerContext, spec: dict, kind: Kind) -> Plan:
    """The job's plan; raises the client's errors (model or dataset gone, model replaced)."""
    record = ctx.models.get(spec["model"])
    if record is None:
        raise NotFound(f"model {spec['model']!r} no longer exists", code="model_not_found")
    if record.onnx_sha256 != spec["model_sha256"]:
        raise Invalid(f"model {spec['model']!r} was replaced after the job was queued", code="model_changed")
    params = kind.params.model_validate(spec["params"])
    s = ctx.settings
    datasets = {read.name: open_dataset(ctx, spec["inputs"][read.name], spec.get("owner"))
                for read in kind.reads if read.source is Source.DATASET and read.name in spec["inputs"]}
    work = Workload(record, batch=s.dataset_batch if datasets else s.attribution_batch,
                    images=sum(dataset.count for dataset in datasets.values()), forward_batch=s.occlusion_batch)
    return Plan(record, params, params.total_steps(work), datasets, params.method_steps(work))


def method_of(kind: Kind):
    module, _, function = kind.method.partition(":")
    return getattr(importlib.import_module(module), function)


def run_job(job_id: str, attempt: int) -> str:
    """Run attempt `attempt` of job `job_id`; returns how it ended (for RQ's own records)."""
    ctx = _context
    assert ctx is not None, "run_job runs inside a convscope worker (python -m workers)"
    record = ctx.store.get(job_id)
    if record is None:
        log.warning("job record expired before it ran", extra={"fields": {"job": job_id}})
        return "missing"
    spec = json.loads(record["spec"])
    kind = KINDS[spec["kind"]]
    try:  # before the claim, so that the job is `started` with its total; errors end it just after the claim
        plan, refusal = plan_of(ctx, spec, kind), None
    except redis.RedisError:
        raise
    except Exception as exc:
        plan, refusal = None, exc
    total = plan.total if plan else 0
    started = time.time()
    limit = time_limit(kind.name, ctx.settings.job_time_limit_scale)
    claimed, before = ctx.store.transition(
        job_id, (JobStatus.QUEUED,), JobStatus.STARTED, expect_attempt=attempt, worker=ctx.name, started_at=repr(started),
        deadline=repr(started + limit + DEADLINE_GRACE_S), progress={"step": 0, "total": total})
    if not claimed:
        log.info("job not run", extra={"fields": {"job": job_id, "status": before, "attempt": attempt}})
        return f"skipped ({before})"
    fields = {"job": job_id, "kind": kind.name, "attempt": attempt}
    log.info("job started", extra={"fields": {**fields, "total": total}})
    progress = Progress(ctx.store, job_id, deadline=started + limit, total=total)
    stages = Stages()
    try:
        if refusal is not None:
            raise refusal
        result, artifacts = compute(ctx, spec, kind, plan, progress, stages, Prestore(ctx.store, job_id))
    except JobCanceled:
        return _end(ctx, job_id, attempt, JobStatus.CANCELED, fields)
    except (JobTimedOut, JobTimeoutException):
        return _end(ctx, job_id, attempt, JobStatus.FAILED, fields, error={
            "code": "timeout", "message": f"the job ran past its time limit of {limit} s"})
    except ConvscopeError as exc:
        return _end(ctx, job_id, attempt, JobStatus.FAILED, fields, error={"code": exc.code, "message": exc.message})
    except torch.OutOfMemoryError:
        return _end(ctx, job_id, attempt, JobStatus.FAILED, fields, error={
            "code": "out_of_memory", "message": "the worker ran out of memory; try a smaller input or batch"})
    except redis.RedisError:
        raise
    except Exception as exc:  # a bug or a model the method cannot handle: log it, tell the client briefly
        log.exception("job failed", extra={"fields": fields})
        return _end(ctx, job_id, attempt, JobStatus.FAILED, fields, error={
            "code": "internal", "message": f"the {kind.name} method failed ({exc.__class__.__name__}); "
                                           "the worker's log has the details"})
    status = _end(ctx, job_id, attempt, JobStatus.FINISHED, {**fields, **stages.ms()}, result=result,
                  progress={"step": total, "total": total}, artifacts=artifacts, remember=spec["digest"])
    return status


def _end(ctx: WorkerContext, job_id: str, attempt: int, status: JobStatus, fields: dict, *,
         artifacts: dict[str, bytes] | None = None, remember: str | None = None, **values) -> str:
    """End the job: artifacts stored, status changed and (finished) the spec remembered for the cache, in one round
    trip (`JobStore.finish`) where there are artifacts, else one transition."""
    if artifacts is not None:
        changed, before = ctx.store.finish(job_id, attempt, status, artifacts, remember, **values)
    else:
        changed, before = ctx.store.transition(job_id, (JobStatus.STARTED,), status, expect_attempt=attempt, **values)
    if not changed:  # cancelled and ended elsewhere, or declared lost: that ending stands
        log.warning("job had already ended", extra={"fields": {**fields, "status": before}})
        return f"ended elsewhere ({before})"
    log.info("job ended", extra={"fields": {**fields, "status": status, **values.get("error", {})}})
    return status


_PRESTORE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prestore")


class Prestore:
    """Files stored before the job ends. Those known before the method runs (`early_artifacts`: `input.npy`) are
    written on a background thread while it runs (off the job's critical path); the API serves them only once the
    job has ended and lists them. Those `publish`ed (an attribution map, before its scores) are stored at once and
    announced: the API serves them while the job still runs. `settle` waits for the background write and leaves
    every file stored early out of what the ending stores."""

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.files: dict[str, bytes] = {}
        self._write: Future | None = None

    def start(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        if files:
            self._write = _PRESTORE.submit(self.store.put_artifacts, self.job_id, files)

    def publish(self, files: dict[str, bytes]) -> None:
        """Store `files` (those not stored yet) and announce each one (`artifact` events)."""
        fresh = {name: data for name, data in files.items() if name not in self.files}
        if fresh:
            self.store.publish(self.job_id, fresh)
            self.files.update(fresh)

    def settle(self, artifacts: dict[str, bytes]) -> dict[str, bytes]:
        """The artifacts still to store: those not stored early (an early write that failed is raised here)."""
        if self._write is not None:
            self._write.result()
        return {name: data for name, data in artifacts.items() if name not in self.files}


class Stages:
    """Wall time of each stage of a job (s), logged with its end: where a job's time goes besides the method."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def ms(self) -> dict[str, float]:
        return {f"{name}_ms": round(s * 1000, 1) for name, s in self.seconds.items()}


def compute(ctx: WorkerContext, spec: dict, kind: Kind, plan: Plan, progress: Progress,
            stages: Stages | None = None, prestore: Prestore | None = None) -> tuple[dict, dict]:
    """Inputs → method → (result, artifacts still to store: those `prestore` stored early are left out); raises
    the errors `run_job` turns into endings."""
    stages = stages or Stages()
    record, params = plan.record, plan.params
    loaded = {read.name: LOADERS[read.source](ctx, Loading(read.name, spec["inputs"][read.name], record,
                                                             spec.get("owner"), progress, plan.datasets.get(read.name)))
              for read in kind.reads if read.name in spec["inputs"]}  # an optional input not given is absent
    image = loaded.get("image")
    s = ctx.settings
    classify = classifier(ctx, record)
    method_progress = progress_part(progress, 0, plan.method_total, plan.total)
    feed = next((loaded[name] for name in plan.datasets), None)
    if feed is not None and kind.engine is Engine.ONNXRUNTIME:
        task = DatasetTask(record, params, feed, query=image, threads=s.worker_torch_threads)
    elif kind.engine is Engine.ONNXRUNTIME:
        task = ForwardTask(record, params, image.x, classify, method_progress, batch=s.occlusion_batch)
    else:
        device = ctx.networks.device
        tensors = {read.name: TensorImage.of(loaded[read.name], device) for read in kind.reads
                   if read.source is Source.IMAGE and read.name in loaded}
        task = Task(ctx.networks.get(record), tensors["image"].x if "image" in tensors else None, params,
                    method_progress, batch=s.attribution_batch, preview=previews(ctx.store, progress.job_id),
                    inputs=tensors, classify=classify, forward_batch=s.occlusion_batch, feed=feed,
                    units=RedisUnitCache(ctx.store.client, unit_key(s.redis_prefix, record.onnx_sha256, kind.name,
                                                                    spec["params"]), s.artifact_ttl_s),
                    icon_batch=s.atlas_batch)
    stages.mark("inputs")
    early = early_artifacts(kind.returns, image)
    if prestore is not None:
        prestore.start(early)
    out = method_of(kind)(task)
    stages.mark("method")
    if not isinstance(out, kind.returns):
        raise TypeError(f"{kind.method} returned {type(out).__name__}, not {kind.returns.__name__}")
    if isinstance(out, Attribution):
        faithfulness.ranking(out, image.x)
        files = map_artifacts(out, image, early)
        if prestore is not None:  # the map is readable now, while its scores are computed
            prestore.publish(files)
        stages.mark("encode")
        out = faithfulness.score(out, image.x, params, record, classify, batch=s.occlusion_batch,
                                 progress=progress_part(progress, plan.method_total,
                                                        plan.total - plan.method_total, plan.total))
        stages.mark("scores")
        artifacts = {**files, **table_artifacts(out)}
    else:
        artifacts = artifacts_of(out, image, early)
    stages.mark("encode")
    result = {"artifacts": list(artifacts), "metrics": out.metrics}
    return result, prestore.settle(artifacts) if prestore is not None else artifacts


def classifier(ctx: WorkerContext, record: ModelRecord) -> Classify:
    """Softmax probabilities of a batch on the model's ONNX Runtime session (built on first use, then cached
    by the worker)."""
    def classify(x: np.ndarray) -> np.ndarray:
        return softmax(ctx.runtimes.get(record).logits(np.ascontiguousarray(x, dtype=np.float32))).astype(np.float32)
    return classify


def previews(store: JobStore, job_id: str, side: int = 128):
    """preview(step, H×W×3 uint8) → a `preview` event with a small PNG (longer side `side` px)."""
    def preview(step: int, pixels: np.ndarray) -> None:
        image = Image.fromarray(pixels)
        image.thumbnail((side, side))
        store.event(job_id, "preview", {"step": step, "png_base64": base64.b64encode(render.png(image)).decode()})
    return preview
