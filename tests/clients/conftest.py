"""The real service (uvicorn) and one real worker on the real Redis, with an API key, as the clients see them."""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import Settings
from tests.conftest import BUILTIN_DATA, REDIS_URL, ROOT, clean_prefix, encode, sample
from tests.jobs.conftest import Workers, delete_rq_keys, free_port, job_ids, stop_process, wait_api_ready

MODEL = "efficientnet-lite0"
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class Service:
    url: str
    key: str
    log_dir: Path


@pytest.fixture(scope="session")
def service(builtin_store, tmp_path_factory) -> Service:
    """`uvicorn service.app:create_app` and `python -m workers` on a session-own prefix and queue, keys on."""
    token = uuid.uuid4().hex[:8]
    key = secrets.token_urlsafe(24)
    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-cl-{token}:", job_queue=f"test-cl-{token}",
                        data_dir=BUILTIN_DATA, api_keys=f"clients:{key}")
    logs = tmp_path_factory.mktemp("client-logs")
    workers = Workers(settings, logs)
    port = free_port()
    env = workers.env(settings, CONVSCOPE_API_KEYS=settings.api_keys)
    with open(logs / "api.log", "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                                   "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        worker = workers.start(settings, wait=False)
        url = f"http://127.0.0.1:{port}"
        wait_api_ready(server, url, logs / "api.log", START_TIMEOUT_S)
        workers.wait_ready(worker, settings, timeout=START_TIMEOUT_S)
        yield Service(url=url, key=key, log_dir=logs)
    finally:
        stop_process(server)
        workers.stop_all()
        delete_rq_keys(settings.redis_url, {settings.job_queue} | job_ids(settings))
        clean_prefix(settings.redis_prefix)


@pytest.fixture(scope="session")
def cat_file(tmp_path_factory) -> Path:
    """A photo of a cat (scikit-image's `chelsea`) as a JPEG file, as a user has one."""
    path = tmp_path_factory.mktemp("images") / "cat.jpg"
    path.write_bytes(encode(sample("chelsea"), "JPEG", quality=90))
    return path
