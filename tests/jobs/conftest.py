"""Integration fixtures: the real app, real worker processes (`python -m workers`), the real Redis.

Every queue, worker and key carries the test session's own token; the RQ keys those make (RQ keeps
its own `rq:` namespace) are deleted at the end along with the session's prefix.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from core.settings import Settings
from tests.conftest import ROOT, clean_prefix, encode, sample

MODEL = "efficientnet-lite0"


class Workers:
    """Starts `python -m workers` processes for one Settings and stops them all at the end."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.settings, self.log_dir = settings, log_dir
        self.processes: list[subprocess.Popen] = []

    def env(self, settings: Settings | None = None, **extra) -> dict:
        s = settings or self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_") and k != "REDIS_URL"}
        env.update(CONVSCOPE_REDIS_URL=s.redis_url, CONVSCOPE_REDIS_PREFIX=s.redis_prefix,
                   CONVSCOPE_JOB_QUEUE=s.job_queue, CONVSCOPE_DATA_DIR=str(s.data_dir),
                   CONVSCOPE_JOB_TIME_LIMIT_SCALE=str(s.job_time_limit_scale), CONVSCOPE_LOG_LEVEL="INFO",
                   CONVSCOPE_WORKER_WARM_UP="false",  # no umap jobs here: leave the cores to the tests
                   PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, settings: Settings | None = None, wait: bool = True, **extra) -> subprocess.Popen:
        s = settings or self.settings
        name = f"{s.job_queue}-w{len(self.processes)}"
        log = open(self.log_dir / f"{name}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "workers", "--name", name], cwd=ROOT,
                                   env=self.env(s, **extra), stdout=log, stderr=subprocess.STDOUT)
        process.worker_name = name
        self.processes.append(process)
        if wait:
            self.wait_ready(process, s)
        return process

    def wait_ready(self, process: subprocess.Popen, settings: Settings, timeout: float = 60) -> None:
        client = redis.Redis.from_url(settings.redis_url)
        key = f"{settings.redis_prefix}worker:{process.worker_name}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, f"worker exited: {(self.log_dir / f'{process.worker_name}.log').read_text()[-3000:]}"
            if client.exists(key):
                return
            time.sleep(0.1)
        raise TimeoutError("worker did not come up")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_api_ready(process: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    """Until the API process answers 200 on /readyz (its log's tail in the error when it exits or times out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the API did not become ready in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def delete_rq_keys(redis_url: str, tokens: set[str]) -> None:
    """Delete RQ's keys (and set members) that mention any of `tokens` (queue names, job ids)."""
    client = redis.Redis.from_url(redis_url)
    doomed = [key for key in client.scan_iter(match="rq:*", count=1000)
              if any(token in key.decode() for token in tokens)]
    for start in range(0, len(doomed), 500):
        client.delete(*doomed[start:start + 500])
    for members_key in ("rq:queues", "rq:workers"):
        stale = [m for m in client.smembers(members_key) if any(t in m.decode() for t in tokens)]
        if stale:
            client.srem(members_key, *stale)


@dataclass
class Running:
    """A service started by `running_service`: its URL, the API process and the workers."""

    url: str
    server: subprocess.Popen
    workers: Workers
    server_log: Path


@contextmanager
def running_service(settings: Settings, log_dir: Path, workers: int = 1, timeout: float = 90,
                    worker_env: dict | None = None, **api_env):
    """The API (`uvicorn service.app:create_app` on a free port of 127.0.0.1) and `workers` workers as real
    processes on `settings`' prefix and queue, ready (`/readyz` 200, every worker's heartbeat) before the block runs;
    then stopped, and what they left in Redis (the prefix, RQ's keys of the queue and its jobs) deleted. `api_env`:
    settings of the API's only, as `CONVSCOPE_*` variables (API keys, quotas); `worker_env`: the workers' only."""
    pool = Workers(settings, log_dir)
    port, server_log = free_port(), log_dir / "api.log"
    with open(server_log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                                   "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                                  cwd=ROOT, env=pool.env(settings, **api_env), stdout=out, stderr=subprocess.STDOUT)
    try:
        started = [pool.start(settings, wait=False, **(worker_env or {})) for _ in range(workers)]
        url = f"http://127.0.0.1:{port}"
        wait_api_ready(server, url, server_log, timeout)
        for worker in started:
            pool.wait_ready(worker, settings, timeout=timeout)
        yield Running(url, server, pool, server_log)
    finally:
        stop_process(server)
        pool.stop_all()
        delete_rq_keys(settings.redis_url, {settings.job_queue} | job_ids(settings))
        clean_prefix(settings.redis_prefix)


def job_ids(settings: Settings) -> set[str]:
    client = redis.Redis.from_url(settings.redis_url)
    return {key.decode().rsplit(":", 1)[-1] for key in client.scan_iter(match=f"{settings.redis_prefix}job:*")
            if key.decode().count(":") == settings.redis_prefix.count(":") + 1}


@pytest.fixture(scope="session")
def job_settings(settings) -> Settings:
    """The session's settings with its own queue (so no other worker on this Redis takes its jobs)."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    job = settings.model_copy(update={"job_queue": queue})
    yield job
    delete_rq_keys(job.redis_url, {queue} | job_ids(job))


@pytest.fixture(scope="session")
def workers(job_settings, tmp_path_factory):
    pool = Workers(job_settings, tmp_path_factory.mktemp("worker-logs"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def jobs_client(job_settings, workers):
    """The app on the session's queue, with two workers serving it."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    workers.start(wait=False)
    workers.start()
    workers.wait_ready(workers.processes[0], job_settings)
    with TestClient(create_app(job_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def cat_png() -> bytes:
    return encode(sample("chelsea"))


def submit(client, kind: str, image: bytes, params: dict | None = None, wait: float = 0, **extra):
    """POST /v1/jobs as multipart (`image` part + `spec`)."""
    import json

    spec = {"kind": kind, "model": MODEL, "params": params or {}, **extra}
    return client.post(f"/v1/jobs?wait={wait}", files={"image": ("image.png", image, "image/png")},
                       data={"spec": json.dumps(spec)})


def wait_for(client, job_id: str, statuses=("finished", "failed", "canceled"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")


def finished(client, response, timeout: float = 180) -> dict:
    """The job that `response` (to a submit) names, once it has finished (failing the test if it ended otherwise)."""
    assert response.status_code in (200, 202), response.text
    job = wait_for(client, response.json()["id"], timeout=timeout)
    assert job["status"] == "finished", job
    return job


def artifact(client, job: dict, name: str) -> bytes:
    """The bytes of one of a finished job's artifacts."""
    response = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
    assert response.status_code == 200, (name, response.text)
    return response.content


def read_events(stream) -> list[dict]:
    """The server-sent events of a streamed response, as [{"event", "data" (parsed JSON)}]."""
    events, event = [], {}
    for line in stream.iter_lines():
        if line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif not line and event:
            events.append(event)
            event = {}
    return events
