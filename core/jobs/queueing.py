"""RQ glue shared by the API and the workers: the queue, the JSON serializer, the one entry point.

Jobs are enqueued by import path with JSON arguments (`run_job(job_id, attempt)`), never pickles:
RQ's JSON serializer is used everywhere, and `SafeJob` refuses to import any function but the
worker's entry point, so whoever can write to Redis cannot make a worker call arbitrary code.
The RQ job id is `<job id>-<attempt>`, so a re-queued attempt never collides with the RQ
bookkeeping of the attempt that was lost.

Fairness between tenants: every API key has a queue of its own, `<base>:<tenant>` (`tenant_queue`; with no keys
there is one tenant and jobs go to `<base>` itself). Submitting adds the tenant's queue to the set
`P queues:<base>`, and a worker re-reads that set before every dequeue and takes from the queues in turn, starting
after the one it served last (`FairOrder`): a key with 500 jobs waiting and a key with one each get the next free
worker alternately, so the one job waits for at most one job's run of every worker, not for the 500.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def tenant_queue(base: str, owner: str | None) -> str:
    """The name of the queue a tenant's jobs wait in: `<base>:<tenant>` (tenant names have no `:`, base names
    none either), or `<base>` itself for the open service's one tenant."""
    return base if owner is None else f"{base}:{owner}"


def queue_names(client: redis.Redis, registry_key: str, base: str) -> list[str]:
    """`base` and every tenant queue registered under it (`P queues:<base>`), sorted."""
    tenants = {name.decode() if isinstance(name, bytes) else name for name in client.smembers(registry_key)}
    return [base, *sorted(tenants - {base})]


@dataclass
class FairOrder:
    """Round robin over a set of queues that grows while workers run: the queues in name order, starting after
    the one served last (so a queue that appeared in the meantime gets its turn in its place, not at the end)."""

    last: str | None = None

    def order(self, names: list[str]) -> list[str]:
        names = sorted(names)
        if self.last is None:
            return names
        after = next((i for i, name in enumerate(names) if name > self.last), 0)
        return names[after:] + names[:after]

    def served(self, name: str) -> None:
        self.last = name


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
