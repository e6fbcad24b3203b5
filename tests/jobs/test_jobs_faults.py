"""Faults: a job over its time limit, a worker SIGKILLed mid-job, Redis stopped and started again."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import encode, sample
from tests.jobs.conftest import submit, wait_for

# README "Jobs and workers": with the default heartbeat TTL (6 s) and monitor interval (2 s) a
# SIGKILLed worker's job has ended (or been re-queued) within this many seconds.
DEAD_WORKER_BOUND_S = 10.0


def variant(settings, suffix: str, **update):
    return settings.model_copy(update={"job_queue": f"{settings.job_queue}-{suffix}", **update})


def test_a_job_over_its_time_limit_fails_with_timeout(job_settings, workers, cat_png):
    settings = variant(job_settings, "slow", job_time_limit_scale=0.002)  # integrated_gradients: 2 s
    workers.start(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        job = submit(client, "integrated_gradients", cat_png, {"steps": 2000}, wait=30).json()
    assert job["status"] == "failed" and job["error"]["code"] == "timeout", job
    assert "time limit" in job["error"]["message"]
    assert job["result"] is None


def running_worker(settings, job_id: str) -> str:
    return redis.Redis.from_url(settings.redis_url).hget(f"{settings.redis_prefix}job:{job_id}", "worker").decode()


def wait_for_attempt(settings, job_id: str, attempt: int, timeout: float = 30) -> dict:
    """The job's record once it is on attempt `attempt` (re-queued) or has failed. Its status alone can miss the
    re-queue: a spare worker may take the job again before a poll sees it queued."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.hgetall(f"{settings.redis_prefix}job:{job_id}")
        if int(record.get("attempt", "1")) >= attempt or record.get("status") == "failed":
            return record
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} not re-queued after {timeout} s")


def test_sigkilled_worker_job_fails_or_is_retried_within_the_stated_time(job_settings, workers, cat_png):
    settings = variant(job_settings, "kill")
    first, second = workers.start(settings, wait=False), workers.start(settings)
    workers.wait_ready(first, settings)
    by_name = {p.worker_name: p for p in (first, second)}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        job = submit(client, "integrated_gradients", cat_png, {"steps": 2000}).json()
        wait_for(client, job["id"], ("started",))
        victim = by_name.pop(running_worker(settings, job["id"]))
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        ended = wait_for(client, job["id"], ("failed", "finished", "canceled"), timeout=30)
        assert time.monotonic() - killed <= DEAD_WORKER_BOUND_S
        assert ended["status"] == "failed" and ended["error"]["code"] == "worker_lost", ended

        # With `retry`, the job runs again on another worker instead.
        survivor = next(iter(by_name.values()))
        spare = workers.start(settings, wait=False)
        job = submit(client, "smoothgrad", encode(sample("coffee")), {"samples": 48}, retry=True).json()
        wait_for(client, job["id"], ("started",))
        assert running_worker(settings, job["id"]) == survivor.worker_name
        time.sleep(0.5)
        survivor.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        workers.wait_ready(spare, settings)
        requeued = wait_for_attempt(settings, job["id"], 2)
        assert time.monotonic() - killed <= DEAD_WORKER_BOUND_S and requeued["status"] != "failed", requeued
        finished = wait_for(client, job["id"], timeout=90)
        assert finished["status"] == "finished", finished
        assert running_worker(settings, job["id"]) == spare.worker_name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A private redis-server on a spare port (never the shared one), stoppable and restartable."""

    def __init__(self, directory):
        self.port, self.directory, self.process = free_port(), directory, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_is_503_then_the_service_recovers(job_settings, workers, own_redis, cat_png):
    settings = variant(job_settings, "outage", redis_url=own_redis.url)
    workers.start(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        before = submit(client, "gradcam", cat_png, wait=30).json()
        assert before["status"] == "finished"

        own_redis.stop()
        for response in (submit(client, "gradcam", encode(sample("coffee"))), client.get(f"/v1/jobs/{before['id']}"),
                         client.get("/v1/jobs"), client.delete(f"/v1/jobs/{before['id']}"),
                         client.get(f"/v1/jobs/{before['id']}/artifacts/heatmap.png")):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "redis_unavailable"
        assert client.get("/healthz").status_code == 200

        time.sleep(2)
        own_redis.start()  # empty: the old jobs are gone (404), new ones run
        deadline = time.monotonic() + 20
        while (response := submit(client, "gradcam", encode(sample("rocket")))).status_code == 503:
            assert time.monotonic() < deadline, "the API did not recover"
            time.sleep(0.2)
        assert response.status_code in (200, 202), response.text
        after = wait_for(client, response.json()["id"], timeout=60)  # the worker has reconnected by itself
        assert after["status"] == "finished"
        assert client.get(f"/v1/jobs/{before['id']}").status_code == 404
