"""Shared fixtures: settings with a private Redis key prefix, the built-in model store, the real app."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_DATA = Path(os.environ.get("CONVSCOPE_DATA_DIR", ROOT / "var"))
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Starlette's TestClient sends `Host: testserver`; an open service answers only the host names it is told
# (service/hosts.py), so the tests' settings (and the services they start) name it beside the defaults.
os.environ.setdefault("CONVSCOPE_ALLOWED_HOSTS", "localhost,127.0.0.1,::1,testserver")


def sample(name: str) -> np.ndarray:
    """A scikit-image bundled sample photo (H×W×3 uint8)."""
    import skimage.data

    return getattr(skimage.data, name)()


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **options)
    return out.getvalue()


def eventually(check, seconds: float, step: float = 0.02) -> bool:
    """Whether `check()` came true within `seconds`, asked every `step` seconds."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def clean_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def builtin_store():
    """The model store holding the built-in model (exported by the set-up command)."""
    from core.stores.models import ModelStore
    from models.builtin import BUILTIN_ID, ensure_builtin

    store = ModelStore(BUILTIN_DATA)
    ensure_builtin(store)
    assert store.get(BUILTIN_ID) is not None
    return store


@pytest.fixture(scope="session")
def builtin(builtin_store):
    from models.builtin import BUILTIN_ID

    return builtin_store.get(BUILTIN_ID)


@pytest.fixture(scope="session")
def settings(builtin_store) -> Settings:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield Settings(redis_url=REDIS_URL, redis_prefix=prefix, data_dir=BUILTIN_DATA)
    clean_prefix(prefix)


@pytest.fixture(scope="session")
def client(settings):
    """The real app (real Redis, real ONNX Runtime) behind FastAPI's test client."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def torch_lite0():
    from models.efficientnet_lite import load_pretrained

    return load_pretrained()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3 endpoint on 127.0.0.1: moto's standalone server in its own process (no MinIO binary here);
    the code under test talks to it over HTTP like to any bucket."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(10)


def new_bucket(endpoint: str) -> str:
    """A fresh bucket on the S3 endpoint; returns its name."""
    import boto3

    name = f"convscope-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


def bucket_settings(endpoint: str, bucket: str, data_dir: Path, **update) -> Settings:
    """Settings that keep models and datasets in `s3://bucket/store`, with `data_dir` as this machine's cache."""
    fields = dict(redis_url=REDIS_URL, data_dir=data_dir, storage_url=f"s3://{bucket}/store", s3_endpoint_url=endpoint,
                  s3_access_key_id="testing", s3_secret_access_key="testing", storage_timeout_s=3)
    return Settings(**(fields | update))


@pytest.fixture(scope="session")
def lite0(builtin_store, builtin):
    """The built-in model as the workers load it (`workers.networks.load_network`), on the CPU."""
    import torch

    from workers.networks import load_network

    return load_network(builtin, builtin_store, torch.device("cpu"))


def run_async(coro, timeout: float = 120):
    """`asyncio.run(coro)` in a thread of its own: a test before it (Playwright's sync API, session-long) may have
    left an event loop running in this one, where `asyncio.run` refuses to start."""
    out = {}

    def main():
        try:
            out["result"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(timeout)
    if "error" in out:
        raise out["error"]
    assert "result" in out, f"the scenario did not finish in {timeout} s"
    return out["result"]

