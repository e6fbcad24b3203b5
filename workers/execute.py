"""The RQ entry point: run one attempt of one job and store what it returns.

`run_job(job_id, attempt)` is the only function RQ may call (see `core.jobs.queueing.SafeJob`). It
plans it (model record, params, and the step count the kind declares for them: `Params.total_steps`),
claims it (queued → started, atomically, with progress {0, total}; a job cancelled meanwhile is
skipped), prepares the input with the same image pipeline as the forward views, calls the kind's
method with a progress callback that keeps that total, and also stops the method on cancellation or
at its time limit, publishes an attribution map at once and then scores it when its params ask for it
(`evaluate`, `workers.methods.mechanics.faithfulness`: forward passes on ONNX Runtime, the job's last
steps), and ends the job. What it computes is `workers/compute.py`; how it ends:

    finished   artifacts stored, result {artifacts, metrics}, spec remembered for the cache
    canceled   DELETE /v1/jobs/{id} was seen at a step
    failed     {code, message}: the client's error codes (4xx kinds), `timeout`, `out_of_memory`,
               or `internal` (the traceback goes to the log only)

Redis errors are not caught: a worker that cannot reach Redis cannot record anything; it
reconnects, and the supervisor sees the job's worker no longer runs it (`worker_lost`).
"""

from __future__ import annotations

import logging
import time

import redis
import torch
from rq.timeouts import JobTimeoutException

from core.errors import ConvscopeError
from core.jobs.record import JobFailure, JobOutcome, JobProgress, JobStages
from core.jobs.records import JobRecords
from core.jobs.status import JobStatus
from core.jobs.supervisor import DEADLINE_GRACE_S, time_limit
from core.kinds.registry import KINDS
from workers.compute import Prestore, Stages, compute, plan_of
from workers.context import WorkerContext

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

    def __init__(self, records: JobRecords, job_id: str, deadline: float, total: int):
        self.records, self.job_id, self.deadline, self.total = records, job_id, deadline, total
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
            if self.records.progress(self.job_id, step, self.total):
                raise JobCanceled
        elif self.records.cancel_requested(self.job_id):
            raise JobCanceled


def run_job(job_id: str, attempt: int) -> str:
    """Run attempt `attempt` of job `job_id`; returns how it ended (for RQ's own records)."""
    ctx = _context
    assert ctx is not None, "run_job runs inside a convscope worker (python -m workers)"
    records = ctx.store.records
    job = records.get(job_id)
    if job is None:
        log.warning("job record expired before it ran", extra={"fields": {"job": job_id}})
        return "missing"
    spec = job.spec
    kind = KINDS[spec.kind]
    try:  # before the claim, so that the job is `started` with its total; errors end it just after the claim
        plan, refusal = plan_of(ctx, spec, kind), None
    except redis.RedisError:
        raise
    except Exception as exc:
        plan, refusal = None, exc
    total = plan.total if plan else 0
    started = time.time()
    limit = time_limit(kind.name, ctx.settings.job_time_limit_scale)
    claimed, before = records.transition(
        job_id, (JobStatus.QUEUED,), JobStatus.STARTED, expect_attempt=attempt, worker=ctx.name, started_at=repr(started),
        deadline=repr(started + limit + DEADLINE_GRACE_S), progress=JobProgress(step=0, total=total))
    if not claimed:
        log.info("job not run", extra={"fields": {"job": job_id, "status": before, "attempt": attempt}})
        return f"skipped ({before})"
    fields = {"job": job_id, "kind": kind.name, "attempt": attempt}
    log.info("job started", extra={"fields": {**fields, "total": total}})
    progress = Progress(records, job_id, deadline=started + limit, total=total)
    stages = Stages()
    try:
        if refusal is not None:
            raise refusal
        outcome, artifacts = compute(ctx, job_id, spec, kind, plan, progress, stages, Prestore(ctx.store.files, job_id))
    except JobCanceled:
        return _end(ctx, job_id, attempt, JobStatus.CANCELED, fields)
    except (JobTimedOut, JobTimeoutException):
        return _fail(ctx, job_id, attempt, fields, "timeout", f"the job ran past its time limit of {limit} s")
    except ConvscopeError as exc:
        return _fail(ctx, job_id, attempt, fields, exc.code, exc.message)
    except torch.OutOfMemoryError:
        return _fail(ctx, job_id, attempt, fields, "out_of_memory",
                     "the worker ran out of memory; try a smaller input or batch")
    except redis.RedisError:
        raise
    except Exception as exc:  # a bug or a model the method cannot handle: log it, tell the client briefly
        log.exception("job failed", extra={"fields": fields})
        return _fail(ctx, job_id, attempt, fields, "internal", f"the {kind.name} method failed "
                     f"({exc.__class__.__name__}); the worker's log has the details")
    status = _end(ctx, job_id, attempt, JobStatus.FINISHED, {**fields, **stages.ms()}, artifacts=artifacts,
                  result=outcome, progress=JobProgress(step=total, total=total), stages=stages.record())
    if status == JobStatus.FINISHED:
        ctx.store.files.remember(spec.digest, job_id)  # after the `end` event: the result cache can wait
        ctx.store.files.charge_artifacts(job_id, spec.owner)  # against the key's quota (core/stores/usage.py)
    return status


def _fail(ctx: WorkerContext, job_id: str, attempt: int, fields: dict, code: str, message: str) -> str:
    return _end(ctx, job_id, attempt, JobStatus.FAILED, fields, error=JobFailure(code=code, message=message))


def _end(ctx: WorkerContext, job_id: str, attempt: int, status: JobStatus, fields: dict, *,
         artifacts: dict[str, bytes] | None = None, result: JobOutcome | None = None,
         progress: JobProgress | None = None, error: JobFailure | None = None, stages: JobStages | None = None) -> str:
    """End the job: artifacts stored and status changed in one round trip (`JobRecords.finish`) where there are
    artifacts, else one transition."""
    values = {name: value for name, value in (("result", result), ("progress", progress), ("error", error),
                                              ("stages", stages)) if value is not None}
    if artifacts is not None:
        changed, before = ctx.store.records.finish(job_id, attempt, status, artifacts, **values)
    else:
        changed, before = ctx.store.records.transition(job_id, (JobStatus.STARTED,), status, expect_attempt=attempt,
                                                       **values)
    if not changed:  # cancelled and ended elsewhere, or declared lost: that ending stands
        log.warning("job had already ended", extra={"fields": {**fields, "status": before}})
        return f"ended elsewhere ({before})"
    log.info("job ended", extra={"fields": {**fields, "status": status, **(error.model_dump() if error else {})}})
    return status
