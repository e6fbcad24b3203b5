"""The Redis keys of the job system, and the small helpers its stores share.

Keys (all under the settings' prefix `P`):

    P job:<id>              hash: spec (JSON), status, progress, timestamps, error, result, worker, attempt
                            (`core.jobs.record.JobRecord`)
    P job:<id>:artifacts    hash: artifact name → bytes
    P job:<id>:events       stream: progress / preview / artifact / end events, read by SSE and `?wait=`
    P jobs:<owner or ->     sorted set: job id → created_at, the caller's job list
    P jobs:started          sorted set: ids of started jobs, scanned for lost ones
    P jobs:queued           sorted set: ids of queued jobs → when they were queued, scanned for strays
    P jobs:ended            stream: {kind, status, seconds} of every ended job (metrics)
    P jobcache:<digest>     id of a finished job with that spec (same model, image bytes, params)
    P jobinput:<sha256>     an input image file, by content
    P jobinput:<sha256>.rgb the same image as the API decoded it (npy, H×W×3 uint8), for a small image, kept
                            briefly: the worker then skips decoding it again
    P worker:<name>         heartbeat: the id of the job the worker runs ("-" when idle), short TTL
    P workers               set: names of workers that published their cache figures
    P workerstats:<name>    JSON of a worker's cache figures (networks, sessions, blobs), heartbeat TTL
    P lock:<name>           a short-lived lock, e.g. `modelblob:<sha256>` around adding and deleting a model file
    P queues:<queue>        set: the per-tenant RQ queues (`<queue>:<tenant>`) of base queue <queue>, read by workers
                            between jobs to find new tenants (`core.jobs.queueing`)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import redis

# Names no tenant may have: the words this layout puts where a tenant's name goes (`jobs:queued` beside
# `jobs:<tenant>`), and the marks that stand for no tenant (`-` here, `_` in the image keys).
RESERVED_OWNERS = frozenset({"started", "queued", "ended", "-", "_"})


@dataclass(frozen=True)
class JobKeys:
    prefix: str

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def artifacts(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:artifacts"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:events"

    def index(self, owner: str | None) -> str:
        return f"{self.prefix}jobs:{owner or '-'}"

    @property
    def started(self) -> str:
        return f"{self.prefix}jobs:started"

    @property
    def queued(self) -> str:
        return f"{self.prefix}jobs:queued"

    @property
    def ended(self) -> str:
        return f"{self.prefix}jobs:ended"

    def cache(self, digest: str) -> str:
        return f"{self.prefix}jobcache:{digest}"

    def input(self, sha256: str) -> str:
        return f"{self.prefix}jobinput:{sha256}"

    def decoded(self, sha256: str) -> str:
        return f"{self.prefix}jobinput:{sha256}.rgb"

    def worker(self, name: str) -> str:
        return f"{self.prefix}worker:{name}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def worker_stats(self, name: str) -> str:
        return f"{self.prefix}workerstats:{name}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def queues(self, base: str) -> str:
        return f"{self.prefix}queues:{base}"


@contextmanager
def in_pipeline(client: redis.Redis, pipe, transaction: bool = True):
    """The caller's pipeline as is, or a pipeline of our own that is executed on leaving (one round trip)."""
    if pipe is not None:
        yield pipe
        return
    with client.pipeline(transaction=transaction) as own:
        yield own
        own.execute()


def text(value) -> str | None:
    """A Redis reply as text (None stays None)."""
    return value.decode() if isinstance(value, bytes) else value


def fields_of(raw: dict) -> dict[str, str]:
    """A Redis hash reply as text → text."""
    return {text(k): text(v) for k, v in raw.items()}
