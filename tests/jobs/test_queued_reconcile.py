"""No job left behind before it is claimed: a worker killed between dequeue and claim, and a record whose queue
entry was lost. Each job then runs on another worker within a bounded time (or ends `failed` with a code once it
has been lost too often). An enqueue that fails leaves nothing: inputs, record and queue entry are one transaction."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import numpy as np
import redis
from fastapi.testclient import TestClient

from core.jobs import queueing
from core.jobs.record import JobSpec
from core.jobs.store import JobStore
from core.jobs.supervisor import MAX_ATTEMPTS, reconcile_queued
from service.app import create_app
from tests.conftest import ROOT, encode, sample
from tests.jobs.conftest import submit, wait_for

# heartbeat TTL (6 s) + two monitor passes (2 s each) + the 1 s a job is left alone after queueing,
# plus the time the job itself takes on a loaded machine.
STRAY_BOUND_S = 11.0


def variant(settings, suffix: str):
    return settings.model_copy(update={"job_queue": f"{settings.job_queue}-{suffix}"})


def start_dying_worker(workers, settings) -> subprocess.Popen:
    name = f"{settings.job_queue}-dying"
    log = open(workers.log_dir / f"{name}.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "tests.jobs.dying_worker", "--name", name], cwd=ROOT,
                               env=workers.env(settings), stdout=log, stderr=subprocess.STDOUT)
    process.worker_name = name
    workers.processes.append(process)
    workers.wait_ready(process, settings)
    return process


def unique_image() -> bytes:
    """An image no earlier job of the session used, so that no job here is answered from the result cache: the cat
    with its first 16 pixels set from a fresh UUID (a crop offset from 60 choices collided with other tests' full cat
    once in a while)."""
    pixels = sample("chelsea").copy()
    pixels[0, :16] = np.frombuffer(uuid.uuid4().bytes, np.uint8)[:, None]
    return encode(pixels)


def record(settings, job_id: str) -> dict:
    raw = redis.Redis.from_url(settings.redis_url).hgetall(f"{settings.redis_prefix}job:{job_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_a_worker_killed_between_dequeue_and_claim_leaves_no_job_behind(job_settings, workers):
    settings = variant(job_settings, "unclaimed")
    dying = start_dying_worker(workers, settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        job = submit(client, "gradcam", unique_image()).json()
        assert job["status"] == "queued", job
        dying.wait(90)  # it took the job off the queue and died
        killed = time.monotonic()
        assert dying.returncode == -9
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
        assert redis.Redis.from_url(settings.redis_url).llen(f"rq:queue:{settings.job_queue}") == 0
        workers.start(settings)
        ended = wait_for(client, job["id"], timeout=60)
        assert ended["status"] == "finished", (ended, record(settings, job["id"]))
        assert time.monotonic() - killed <= STRAY_BOUND_S + 20, time.monotonic() - killed
        assert record(settings, job["id"])["attempt"] == "2"


def test_an_enqueue_that_fails_writes_nothing(job_settings, monkeypatch):
    settings = variant(job_settings, "refused")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        def redis_gone(*args, **kwargs):
            raise redis.ConnectionError("Redis went away")

        before = [job["id"] for job in client.get("/v1/jobs").json()["jobs"]]
        monkeypatch.setattr(queueing, "enqueue", redis_gone)
        refused = submit(client, "saliency", unique_image())
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "redis_unavailable"
        monkeypatch.undo()
        assert [job["id"] for job in client.get("/v1/jobs").json()["jobs"]] == before


def test_a_record_whose_queue_entry_was_lost_is_requeued(job_settings, workers, monkeypatch):
    settings = variant(job_settings, "unqueued")
    workers.start(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        monkeypatch.setattr(queueing, "enqueue", lambda *args, **kwargs: None)  # the record is written, no queue entry
        lost = submit(client, "saliency", unique_image()).json()
        monkeypatch.undo()
        assert lost["status"] == "queued" and lost["kind"] == "saliency", lost
        assert redis.Redis.from_url(settings.redis_url).llen(f"rq:queue:{settings.job_queue}") == 0
        since = time.monotonic()
        ended = wait_for(client, lost["id"], timeout=60)
        assert ended["status"] == "finished", (ended["error"], ended["progress"], record(settings, lost["id"]))
        assert time.monotonic() - since <= STRAY_BOUND_S + 20
        assert record(settings, lost["id"])["attempt"] == "2"


def test_a_job_lost_too_often_ends_failed_with_a_code(job_settings):
    """Unit test of the reconciler alone: a record on no queue, seen as a stray at every attempt."""
    settings = variant(job_settings, "hopeless")
    client = redis.Redis.from_url(settings.redis_url)
    store = JobStore(client, settings.redis_prefix, 600)
    queue = queueing.queue(client, settings.job_queue)
    store.records.create("hopeless-job", JobSpec(kind="saliency", model="m", model_sha256="-",
                                                 queue=settings.job_queue))
    now = time.time() + 5
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert reconcile_queued(store, queue, scale=1.0, stray_after_s=1.0, now=now) == 0  # first sighting
        assert reconcile_queued(store, queue, scale=1.0, stray_after_s=1.0, now=now + 2) == 1
        queue.empty()  # the re-queued attempt is lost again
        client.delete(f"rq:job:hopeless-job-{attempt + 1}")
        now += 5
    job = store.records.get("hopeless-job")
    assert job.status == "failed" and job.error.code == "not_enqueued", job
    assert store.records.queued_since(now + 100) == []


def test_a_requeued_job_keeps_the_time_limit_it_was_submitted_with(job_settings):
    """Another process (a worker or API with another CONVSCOPE_JOB_TIME_LIMIT_SCALE) re-queues a stray job: RQ still
    gives it the limit in its spec, not one at that process's scale (found in the full suite: a worker of a
    timeout test, at scale 0.01, re-queued another test's job with a 1 s limit, and it failed with `timeout`)."""
    settings = variant(job_settings, "own-limit")
    client = redis.Redis.from_url(settings.redis_url)
    store = JobStore(client, settings.redis_prefix, 600)
    queue = queueing.queue(client, settings.job_queue)
    store.records.create("limited-job", JobSpec(kind="saliency", model="m", model_sha256="-",
                                                queue=settings.job_queue, time_limit_s=120))
    now = time.time() + 5
    assert reconcile_queued(store, queue, scale=0.01, stray_after_s=1.0, now=now) == 0  # first sighting
    assert reconcile_queued(store, queue, scale=0.01, stray_after_s=1.0, now=now + 2) == 1
    from rq.job import Job as RQJob

    assert RQJob.fetch("limited-job-2", connection=client).timeout == 120
    queue.empty()
