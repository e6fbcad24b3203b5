"""What one attempt of a job computes, once the runner (`workers/execute.py`) has claimed it: the plan (model
record, params, step count), the inputs through the same image pipeline as the forward views, the kind's
method, an attribution map's faithfulness scores, and the files to store."""

from __future__ import annotations

import base64
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core import encoding
from core.errors import Invalid, NotFound
from core.jobs.events import JobEvents
from core.jobs.files import JobFiles
from core.jobs.record import JobOutcome, JobSpec, JobStages
from core.jobs.units import RedisUnitCache, unit_key
from core.kinds.kind import Engine, Kind, Source
from core.kinds.params import Params, Workload
from core.methods import Attribution, Classify, DatasetTask, ForwardTask, Progress, progress_part
from core.model_record import ModelRecord
from core.stores.datasets import Dataset
from models.forward import softmax
from workers.artifacts import artifacts_of, early_artifacts, map_artifacts, table_artifacts
from workers.context import WorkerContext
from workers.inputs import LOADERS, Loading, open_dataset
from workers.methods import method_of
from workers.methods.mechanics import faithfulness
from workers.methods.task import Task, TensorImage


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


def plan_of(ctx: WorkerContext, spec: JobSpec, kind: Kind) -> Plan:
    """The job's plan; raises the client's errors (model or dataset gone, model replaced)."""
    record = ctx.models.get(spec.model)
    if record is None:
        raise NotFound(f"model {spec.model!r} no longer exists", code="model_not_found")
    if record.onnx_sha256 != spec.model_sha256:
        raise Invalid(f"model {spec.model!r} was replaced after the job was queued", code="model_changed")
    params = kind.params.model_validate(spec.params)
    s = ctx.settings
    datasets = {read.name: open_dataset(ctx, spec.inputs[read.name], spec.owner)
                for read in kind.reads if read.source is Source.DATASET and read.name in spec.inputs}
    work = Workload(record, batch=s.dataset_batch if datasets else s.attribution_batch,
                    images=sum(dataset.count for dataset in datasets.values()), forward_batch=s.occlusion_batch)
    return Plan(record, params, params.total_steps(work), datasets, params.method_steps(work))


_PRESTORE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prestore")


class Prestore:
    """Files stored before the job ends. Those known before the method runs (`early_artifacts`: `input.npy`) are
    written on a background thread while it runs (off the job's critical path); the API serves them only once the
    job has ended and lists them. Those `publish`ed (an attribution map, before its scores) are stored at once and
    announced: the API serves them while the job still runs. `settle` waits for the background write and leaves
    every file stored early out of what the ending stores."""

    def __init__(self, files: JobFiles, job_id: str):
        self.store, self.job_id = files, job_id
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

    def record(self) -> JobStages:
        """The split the job record keeps (`JobStages`)."""
        get = self.seconds.get
        return JobStages(inputs=get("inputs", 0.0), method=get("method", 0.0), scoring=get("scores", 0.0),
                         encode=get("encode", 0.0))


def compute(ctx: WorkerContext, job_id: str, spec: JobSpec, kind: Kind, plan: Plan, progress: Progress,
            stages: Stages | None = None, prestore: Prestore | None = None) -> tuple[JobOutcome, dict[str, bytes]]:
    """Inputs → method → (outcome, artifacts still to store: those `prestore` stored early are left out); raises
    the errors the runner turns into endings."""
    stages = stages or Stages()
    record, params = plan.record, plan.params
    loaded = {read.name: LOADERS[read.source](ctx, Loading(read.name, spec.inputs[read.name], record, spec.owner,
                                                             progress, plan.datasets.get(read.name)))
              for read in kind.reads if read.name in spec.inputs}  # an optional input not given is absent
    image = loaded.get("image")
    s = ctx.settings
    classify = classifier(ctx, record)
    method_progress = progress_part(progress, 0, plan.method_total, plan.total)
    feed = next((loaded[name] for name in plan.datasets), None)
    if feed is not None and kind.engine is Engine.ONNXRUNTIME:
        task = DatasetTask(record, params, feed, query=image, threads=s.worker_torch_threads)
    elif kind.engine is Engine.ONNXRUNTIME:
        task = ForwardTask(record, params, image.x, classify, method_progress, batch=s.occlusion_batch,
                           model=ctx.runtimes.get(record))
    else:
        device = ctx.networks.device
        tensors = {read.name: TensorImage.of(loaded[read.name], device) for read in kind.reads
                   if read.source is Source.IMAGE and read.name in loaded}
        task = Task(ctx.networks.get(record), tensors["image"].x if "image" in tensors else None, params,
                    method_progress, batch=s.attribution_batch, preview=previews(ctx.store.events, job_id),
                    inputs=tensors, classify=classify, forward_batch=s.occlusion_batch, feed=feed,
                    units=RedisUnitCache(ctx.store.client, unit_key(s.redis_prefix, record.onnx_sha256, kind.name,
                                                                    spec.params), s.artifact_ttl_s),
                    icon_batch=s.atlas_batch, model=ctx.runtimes.get(record))
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
        if prestore is not None and params.scored():  # readable now, while its scores are computed
            prestore.publish(files)  # (unscored, the ending stores it a moment later: no extra round trip)
        stages.mark("encode")
        out = faithfulness.score(out, image.x, params, record, classify, batch=s.occlusion_batch,
                                 progress=progress_part(progress, plan.method_total,
                                                        plan.total - plan.method_total, plan.total))
        stages.mark("scores")
        artifacts = {**files, **table_artifacts(out)}
    else:
        artifacts = artifacts_of(out, image, early)
    stages.mark("encode")
    outcome = JobOutcome(artifacts=list(artifacts), metrics=out.metrics)
    return outcome, prestore.settle(artifacts) if prestore is not None else artifacts


def classifier(ctx: WorkerContext, record: ModelRecord) -> Classify:
    """Softmax probabilities of a batch on the model's ONNX Runtime session (built on first use, then cached
    by the worker)."""
    def classify(x: np.ndarray) -> np.ndarray:
        return softmax(ctx.runtimes.get(record).logits(np.ascontiguousarray(x, dtype=np.float32))).astype(np.float32)
    return classify


def previews(events: JobEvents, job_id: str, side: int = 128):
    """preview(step, H×W×3 uint8) → a `preview` event with a small PNG (longer side `side` px)."""
    def preview(step: int, pixels: np.ndarray) -> None:
        image = Image.fromarray(pixels)
        image.thumbnail((side, side))
        events.append(job_id, "preview", {"step": step, "png_base64": base64.b64encode(encoding.png(image)).decode()})
    return preview
