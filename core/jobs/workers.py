"""What the workers tell each other and the API through Redis: heartbeats (which job each worker runs), their
cache figures, and the stream of ended jobs that `/metrics` turns into job durations."""

from __future__ import annotations

import json

import redis

from core.jobs.keys import JobKeys, text


class WorkerBoard:
    """Worker heartbeats and statistics, and the ended-jobs stream."""

    def __init__(self, client: redis.Redis, keys: JobKeys):
        self.client, self.keys = client, keys

    # Liveness.
    def beat(self, worker: str, job_id: str, ttl_s: float) -> None:
        """A worker's heartbeat: the job it runs ('-' when idle), alive for `ttl_s`."""
        self.client.set(self.keys.worker(worker), job_id, ex=max(1, round(ttl_s)))

    def forget(self, worker: str) -> None:
        self.client.delete(self.keys.worker(worker))

    def running(self, name: str) -> str | None:
        """What a worker's heartbeat says it runs: a job id, '-' when idle, None when it is silent (dead)."""
        return text(self.client.get(self.keys.worker(name)))

    # Cache figures.
    def publish_stats(self, worker: str, stats: dict, ttl_s: float) -> None:
        """A worker's cache figures, for the API's /metrics; they vanish with the worker."""
        with self.client.pipeline() as pipe:
            pipe.sadd(self.keys.workers, worker)
            pipe.set(self.keys.worker_stats(worker), json.dumps(stats), ex=max(1, round(ttl_s)))
            pipe.execute()

    def stats(self) -> dict[str, dict]:
        """Live workers' published figures by worker name (workers gone silent are forgotten)."""
        names = sorted(text(n) for n in self.client.smembers(self.keys.workers))
        if not names:
            return {}
        values = self.client.mget([self.keys.worker_stats(n) for n in names])
        gone = [n for n, v in zip(names, values) if v is None]
        if gone:
            self.client.srem(self.keys.workers, *gone)
        return {n: json.loads(v) for n, v in zip(names, values) if v is not None}

    # Ended jobs (for metrics).
    def ended_cursor(self) -> str:
        """The id of the newest entry of the ended-jobs stream ('0-0' when empty): read after it."""
        last = self.client.xrevrange(self.keys.ended, count=1)
        return text(last[0][0]) if last else "0-0"

    def ended_since(self, cursor: str, count: int = 1000) -> tuple[str, list[tuple[str, str, float]]]:
        """(new cursor, [(kind, status, seconds started → ended)]) of jobs that ended after `cursor`."""
        ended = []
        for _, entries in self.client.xread({self.keys.ended: cursor}, count=count) or []:
            for entry_id, fields in entries:
                cursor = text(entry_id)
                ended.append((text(fields[b"kind"]), text(fields[b"status"]), float(fields[b"seconds"])))
        return cursor, ended
