"""Lost-job supervision against the real Redis: a retried job goes back on the queue it was submitted
to, whichever queue the monitor that noticed the loss serves."""

from __future__ import annotations

import time
import uuid

import redis

from core.jobs import queueing
from core.jobs.record import JobSpec
from core.jobs.status import JobStatus
from core.jobs.store import JobStore
from core.jobs.supervisor import end_lost_jobs
from tests.conftest import REDIS_URL, clean_prefix


def test_a_lost_retried_job_returns_to_its_own_queue():
    prefix = f"test-supervisor-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    store = JobStore(client, prefix, ttl_s=60)
    home, other = queueing.queue(client, f"{prefix}gpu"), queueing.queue(client, f"{prefix}cpu")
    try:
        spec = JobSpec(kind="saliency", model="m", model_sha256="-", retry=True, queue=home.name)
        store.records.create("lost", spec)
        changed, _ = store.records.transition("lost", (JobStatus.QUEUED,), JobStatus.STARTED, worker="gone-worker",
                                      started_at=repr(time.time()), deadline=repr(time.time() + 60))
        assert changed
        # The monitor that notices serves another queue; the dead worker's heartbeat is absent.
        assert end_lost_jobs(store, other, scale=1.0) == 1
        lost = store.records.get("lost")
        assert lost.status == JobStatus.QUEUED and lost.spec == spec and lost.attempt == 2
        assert home.job_ids == [queueing.rq_job_id("lost", 2)] and other.job_ids == []
    finally:
        for q in (home, other):
            q.delete(delete_jobs=True)
        clean_prefix(prefix)
