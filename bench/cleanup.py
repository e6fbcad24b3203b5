"""What a benchmark leaves in Redis, deleted when it ends: its key prefix and, for the benches that run workers on a
queue of their own, the RQ keys of that queue and of its jobs (RQ keeps its own names, outside the prefix)."""

from __future__ import annotations

import redis

CHUNK = 500  # keys per DELETE


def delete_run(url: str, prefix: str, queue: str | None = None) -> None:
    """Delete every key under `prefix`; with `queue`, also RQ's keys that name the queue or one of the run's jobs, and
    the queue's entries in RQ's sets of queues and workers."""
    client = redis.Redis.from_url(url)
    doomed = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if queue is not None:
        tokens = {queue} | {k.decode().split(":")[2] for k in doomed if k.decode().startswith(f"{prefix}job:")}
        doomed += [k for k in client.scan_iter(match="rq:*") if any(t in k.decode() for t in tokens)]
        for members in ("rq:queues", "rq:workers"):
            stale = [m for m in client.smembers(members) if queue in m.decode()]
            if stale:
                client.srem(members, *stale)
    for start in range(0, len(doomed), CHUNK):
        client.delete(*doomed[start:start + CHUNK])
