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
"""

from __future__ import annotations

import json
import logging
import time

from rq import Queue

from core.jobs import queueing
from core.jobs.status import JobStatus
from core.jobs.store import JobStore
from core.kinds.registry import KINDS

log = logging.getLogger("convscope.supervisor")
DEADLINE_GRACE_S = 30.0
LOST = {"code": "worker_lost", "message": "the worker running this job stopped (it was killed or lost its "
                                         "connection to Redis) before the job ended"}


def time_limit(kind: str, scale: float) -> int:
    """A kind's time limit in seconds after the machine's scale factor (at least 1 s)."""
    return max(1, round(KINDS[kind].time_limit_s * scale))


def check_job(store: JobStore, queue: Queue, job_id: str, record: dict | None, *, scale: float,
              now: float | None = None) -> bool:
    """End or re-queue one started job if it is lost; returns True when it did something."""
    if record is None or record.get("status") != JobStatus.STARTED:
        store.forget_started(job_id)
        return False
    now = time.time() if now is None else now
    attempt = int(record.get("attempt", "1"))
    running = store.worker_job(record.get("worker", ""))
    if running == job_id:
        if now <= float(record.get("deadline", "inf")):
            return False
        changed, _ = store.transition(job_id, (JobStatus.STARTED,), JobStatus.FAILED, expect_attempt=attempt, error={
            "code": "timeout", "message": "the job ran past its time limit and its worker did not stop it"})
        return changed
    spec = json.loads(record["spec"])
    if spec.get("retry") and attempt < 2:
        changed, _ = store.transition(job_id, (JobStatus.STARTED,), JobStatus.QUEUED, expect_attempt=attempt,
                                      attempt=str(attempt + 1), worker="-")
        if changed:
            log.warning("re-queued a job whose worker died", extra={"fields": {"job": job_id, "attempt": attempt + 1}})
            # Back on the queue it was submitted to (the monitor may serve another queue on the same Redis).
            home = queueing.queue(store.client, spec["queue"]) if spec.get("queue") else queue
            queueing.enqueue(home, job_id, attempt + 1, time_limit_s=time_limit(spec["kind"], scale),
                             ttl_s=store.ttl_s)
        return changed
    changed, _ = store.transition(job_id, (JobStatus.STARTED,), JobStatus.FAILED, expect_attempt=attempt, error=LOST)
    if changed:
        log.warning("a job's worker died; the job failed", extra={"fields": {"job": job_id, "worker": record.get("worker")}})
    return changed


def end_lost_jobs(store: JobStore, queue: Queue, *, scale: float) -> int:
    """Check every started job once; returns how many were ended or re-queued."""
    now = time.time()
    return sum(check_job(store, queue, job_id, store.get(job_id), scale=scale, now=now)
               for job_id in store.started_ids())
