"""A job's files in Redis: its inputs (kept by content until the worker reads them), its artifacts, and the
result cache that answers a repeated job from an earlier one's artifacts."""

from __future__ import annotations

import json

import redis

from core.jobs.events import JobEvents
from core.jobs.keys import JobKeys, in_pipeline, text
from core.jobs.status import media_type
from core.stores.usage import JOB_BYTES, NO_LIMIT, UsageLedger

DECODED_TTL_S = 600  # decoded pixels are a shortcut for a job about to run, not a second copy kept for a day


class JobFiles:
    """Inputs, artifacts and the result cache."""

    def __init__(self, client: redis.Redis, keys: JobKeys, ttl_s: int, events: JobEvents,
                 usage: UsageLedger | None = None):
        self.client, self.keys, self.ttl_s, self.events = client, keys, ttl_s, events
        self.usage = usage or UsageLedger(client, keys.prefix)

    # Inputs.
    def put_input(self, sha256: str, data: bytes, decoded: bytes | None = None, pipe=None) -> None:
        """Keep an input file (and, given, its decoded pixels as npy bytes, for `DECODED_TTL_S`), in one round trip
        (or in `pipe`, when given, for the caller to execute)."""
        with in_pipeline(self.client, pipe, transaction=False) as target:
            target.set(self.keys.input(sha256), data, ex=self.ttl_s)
            if decoded is not None:
                target.set(self.keys.decoded(sha256), decoded, ex=min(self.ttl_s, DECODED_TTL_S))

    def get_input(self, sha256: str) -> bytes | None:
        return self.client.get(self.keys.input(sha256))

    def get_decoded(self, sha256: str) -> bytes | None:
        """The pixels the API decoded from input `sha256` (npy bytes), while they are kept; else None."""
        return self.client.get(self.keys.decoded(sha256))

    # Artifacts.
    def put_artifacts(self, job_id: str, artifacts: dict[str, bytes], pipe=None) -> None:
        """Store artifacts for the artifact TTL (in `pipe`, when given, for the caller to execute)."""
        if not artifacts:
            return
        with in_pipeline(self.client, pipe) as target:
            target.hset(self.keys.artifacts(job_id), mapping=artifacts)
            target.expire(self.keys.artifacts(job_id), self.ttl_s)

    def publish(self, job_id: str, artifacts: dict[str, bytes]) -> None:
        """Store files of a job that is still running and announce each with an `artifact` event: the API serves
        the files named in the record's `ready` field before the job ends (a map while its scores are computed)."""
        ready = sorted(set(json.loads(text(self.client.hget(self.keys.job(job_id), "ready")) or "[]")) | set(artifacts))
        with self.client.pipeline() as pipe:
            self.put_artifacts(job_id, artifacts, pipe)
            pipe.hset(self.keys.job(job_id), "ready", json.dumps(ready))
            for name in artifacts:
                self.events.append(job_id, "artifact", {"name": name, "media_type": media_type(name),
                                                        "url": f"/v1/jobs/{job_id}/artifacts/{name}"}, pipe)
            pipe.execute()

    def charge_artifacts(self, job_id: str, owner: str | None) -> None:
        """Charge what a job's artifacts take in Redis (its own count of the hash, exact) to the owner's job-bytes
        account; never refused: the job was admitted when it was submitted, and the next submission is judged."""
        size = self.client.memory_usage(self.keys.artifacts(job_id), samples=0)
        if size:
            self.usage.charge(owner, JOB_BYTES, f"art:{job_id}", size, self.ttl_s, NO_LIMIT)

    def artifact(self, job_id: str, name: str) -> bytes | None:
        return self.client.hget(self.keys.artifacts(job_id), name)

    def copy_artifacts(self, source_id: str, job_id: str) -> bool:
        """Copy a finished job's artifacts to another job (a cache hit); False when they expired."""
        return bool(self.client.copy(self.keys.artifacts(source_id), self.keys.artifacts(job_id), replace=True))

    # The result cache.
    def remember(self, digest: str, job_id: str) -> None:
        """Job `job_id` finished the computation `digest` (`JobSpec.computation_digest`)."""
        self.client.set(self.keys.cache(digest), job_id, ex=self.ttl_s)

    def cached(self, digest: str, pipe=None) -> str | None:
        """The id of a finished job that made computation `digest`, if one is remembered (queued on `pipe`, when
        given: the caller reads the reply)."""
        if pipe is not None:
            pipe.get(self.keys.cache(digest))
            return None
        return text(self.client.get(self.keys.cache(digest)))
