"""Finding jobs that will never end by themselves, and ending them.

RQ alone notices a dead worker only when the job's heartbeat expires (the job's time limit plus a
minute) and another worker's maintenance pass runs (every ten minutes) — with no other worker
alive, never. convscope therefore keeps its own liveness check: every worker refreshes a heartbeat
key `P worker:<name>` (value: the job it runs) every `worker_heartbeat_s`, with a TTL of
`worker_heartbeat_ttl_s`. The API (every `job_monitor_interval_s`, and whenever a started job is
read) and every worker (in its heartbeat thread) look at each started job:

- its worker's heartbeat is gone, or names another job → the worker died or lost Redis mid-job:
  the job is re-queued once if its spec asked for `retry`, else it ends `failed` (`worker_lost`);
- it is past its deadline (time limit + grace) while its worker still beats → `failed` (`timeout`).

So a SIGKILLed worker's job ends within worker_heartbeat_ttl_s + job_monitor_interval_s
(6 + 2 s by default) — sooner when a client reads it. All changes are atomic transitions that
name the attempt they apply to, so several monitors may run at once.

Queued jobs can be lost too, before any worker claims them: a worker that dies between taking the
job off the RQ queue and claiming it leaves the RQ job in the queue's intermediate list and the
record `queued`; an enqueue that fails (Redis gone, the API process killed) just after the record
was written leaves a record that no queue holds. `reconcile_queued` looks at every job queued for
more than a second: when its attempt is neither waiting in its queue nor held by a worker whose
heartbeat names it, it is a stray; a stray seen for `stray_after_s` (the heartbeat TTL) is put back
on its queue as a new attempt (nothing of it ever ran), at most `MAX_ATTEMPTS` attempts in all, and
then ends `failed` (`worker_lost`, or `not_enqueued` when it never reached a queue). A stray is
thus running again within stray_after_s + 2 × job_monitor_interval_s + 1 s (11 s by default).
"""

from __future__ import annotations

import logging
import time

from rq import Queue
from rq.job import Job as RQJob

from core.jobs import queueing
from core.jobs.record import JobFailure, JobRecord, JobSpec
from core.jobs.status import JobStatus
from core.jobs.store import JobStore
from core.kinds.registry import KINDS

log = logging.getLogger("convscope.supervisor")
DEADLINE_GRACE_S = 30.0
MAX_ATTEMPTS = 3
QUEUED_CHECK_AFTER_S = 1.0
NEVER_QUEUED = JobFailure(code="not_enqueued", message="the job could not be put on the queue (Redis or the API "
                                                       "failed just after it was accepted), even after retries")
UNCLAIMED = JobFailure(code="worker_lost", message="workers took the job off the queue and stopped before starting "
                                                  f"it, {MAX_ATTEMPTS} times")
LOST = JobFailure(code="worker_lost", message="the worker running this job stopped (it was killed or lost its "
                                             "connection to Redis) before the job ended")
WORKER_DID_NOT_STOP = JobFailure(code="timeout", message="the job ran past its time limit and its worker did not "
                                                         "stop it")


def time_limit(kind: str, scale: float) -> int:
    """A kind's time limit in seconds after the machine's scale factor (at least 1 s)."""
    return max(1, round(KINDS[kind].time_limit_s * scale))


def spec_time_limit(spec: JobSpec, scale: float) -> int:
    """The time limit a job was submitted with (kept in its spec), so that a job re-queued by another process runs
    under its own limit, not under that process's scale; specs from before it was kept: the kind's at `scale`."""
    return spec.time_limit_s or time_limit(spec.kind, scale)


def home_queue(store: JobStore, spec: JobSpec, queue: Queue) -> Queue:
    """The queue a job was submitted to (a monitor may serve another queue on the same Redis)."""
    return queueing.queue(store.client, spec.queue) if spec.queue else queue


def check_job(store: JobStore, queue: Queue, job_id: str, record: JobRecord | None, *, scale: float,
              now: float | None = None) -> bool:
    """End or re-queue one started job if it is lost; returns True when it did something."""
    records = store.records
    if record is None or record.status != JobStatus.STARTED:
        records.forget_started(job_id)
        return False
    now = time.time() if now is None else now
    attempt = record.attempt
    if store.workers.running(record.worker or "") == job_id:
        if record.deadline is None or now <= record.deadline:
            return False
        changed, _ = records.transition(job_id, (JobStatus.STARTED,), JobStatus.FAILED, expect_attempt=attempt,
                                        error=WORKER_DID_NOT_STOP)
        return changed
    if record.spec.retry and attempt < 2:
        changed, _ = records.transition(job_id, (JobStatus.STARTED,), JobStatus.QUEUED, expect_attempt=attempt,
                                        attempt=str(attempt + 1), worker="-")
        if changed:
            log.warning("re-queued a job whose worker died", extra={"fields": {"job": job_id, "attempt": attempt + 1}})
            queueing.enqueue(home_queue(store, record.spec, queue), job_id, attempt + 1,
                             time_limit_s=spec_time_limit(record.spec, scale), ttl_s=store.ttl_s)
        return changed
    changed, _ = records.transition(job_id, (JobStatus.STARTED,), JobStatus.FAILED, expect_attempt=attempt, error=LOST)
    if changed:
        log.warning("a job's worker died; the job failed", extra={"fields": {"job": job_id, "worker": record.worker}})
    return changed


def end_lost_jobs(store: JobStore, queue: Queue, *, scale: float, stray_after_s: float = 6.0) -> int:
    """Check every started job once, and every queued job that should be waiting in a queue or be held by a
    worker (`reconcile_queued`); returns how many were ended or re-queued."""
    now = time.time()
    lost = sum(check_job(store, queue, job_id, store.records.get(job_id), scale=scale, now=now)
               for job_id in store.records.started_ids())
    return lost + reconcile_queued(store, queue, scale=scale, stray_after_s=stray_after_s, now=now)


def reconcile_queued(store: JobStore, queue: Queue, *, scale: float, stray_after_s: float,
                     now: float | None = None) -> int:
    """Re-queue (or end) queued jobs that no queue and no live worker holds; returns how many it changed."""
    now = time.time() if now is None else now
    waiting: dict[str, set[str]] = {}
    changed = 0
    records = store.records
    for job_id in records.queued_since(now - QUEUED_CHECK_AFTER_S):
        record = records.get(job_id)
        if record is None or record.status != JobStatus.QUEUED:
            records.forget_queued(job_id)
            continue
        home = home_queue(store, record.spec, queue)
        attempt = record.attempt
        rq_id = queueing.rq_job_id(job_id, attempt)
        if home.name not in waiting:
            waiting[home.name] = {i.decode() if isinstance(i, bytes) else i
                                  for i in store.client.lrange(home.key, 0, -1)}
        status, worker = (_text(v) for v in store.client.hmget(RQJob.key_for(rq_id), "status", "worker_name"))
        held = (rq_id in waiting[home.name] or
                (status == "started" and worker and store.workers.running(worker.rsplit(".", 1)[0]) == job_id))
        if held:
            if record.stray_at is not None:
                records.not_stray(job_id)
            continue
        if now - records.stray_since(job_id, now) < stray_after_s:
            continue
        changed += _requeue_stray(store, home, job_id, record.spec, attempt, never_queued=status is None, scale=scale)
    return changed


def _requeue_stray(store: JobStore, home: Queue, job_id: str, spec: JobSpec, attempt: int, *, never_queued: bool,
                   scale: float) -> bool:
    fields = {"job": job_id, "attempt": attempt, "never_queued": never_queued}
    if attempt >= MAX_ATTEMPTS:
        changed, _ = store.records.transition(job_id, (JobStatus.QUEUED,), JobStatus.FAILED, expect_attempt=attempt,
                                      error=NEVER_QUEUED if never_queued else UNCLAIMED)
        if changed:
            log.warning("a queued job was lost too often; it failed", extra={"fields": fields})
        return changed
    changed, _ = store.records.transition(job_id, (JobStatus.QUEUED,), JobStatus.QUEUED, expect_attempt=attempt,
                                          attempt=str(attempt + 1), stray_at="")
    if changed:
        log.warning("re-queued a job that no queue or worker held", extra={"fields": fields})
        queueing.enqueue(home, job_id, attempt + 1, time_limit_s=spec_time_limit(spec, scale), ttl_s=store.ttl_s)
    return changed


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
