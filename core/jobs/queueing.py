"""RQ glue shared by the API and the workers: the queue, the JSON serializer, the one entry point.

Jobs are enqueued by import path with JSON arguments (`run_job(job_id, attempt)`), never pickles:
RQ's JSON serializer is used everywhere, and `SafeJob` refuses to import any function but the
worker's entry point, so whoever can write to Redis cannot make a worker call arbitrary code.
The RQ job id is `<job id>-<attempt>`, so a re-queued attempt never collides with the RQ
bookkeeping of the attempt that was lost.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

ENTRY_POINT = "workers.execute.run_job"


class SafeJob(RQJob):
    """An RQ job that runs only convscope's entry point and no callbacks."""

    @property
    def func(self):
        if self.func_name != ENTRY_POINT:
            raise ValueError(f"refusing to run {self.func_name!r}: only {ENTRY_POINT} is allowed")
        return super().func

    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None


def queue(client: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=client, serializer=JSONSerializer, job_class=SafeJob)


def rq_job_id(job_id: str, attempt: int) -> str:
    return f"{job_id}-{attempt}"


def enqueue(q: Queue, job_id: str, attempt: int, *, time_limit_s: int, ttl_s: int, pipe=None) -> None:
    """Put one attempt of a job on the queue (in the transaction `pipe`, when given, for the caller to execute);
    RQ fails it with a timeout after `time_limit_s`."""
    q.enqueue_call(ENTRY_POINT, args=(job_id, attempt), job_id=rq_job_id(job_id, attempt), timeout=time_limit_s,
                   result_ttl=600, failure_ttl=ttl_s, ttl=ttl_s, description=f"convscope job {job_id}", pipeline=pipe)


def remove_queued(q: Queue, job_id: str, attempt: int) -> None:
    """Take a cancelled attempt off the queue (a worker that dequeues it anyway skips it)."""
    q.remove(rq_job_id(job_id, attempt))
