"""Shared fixtures: settings with a private Redis key prefix, the built-in model store, the real app."""

from __future__ import annotations

import io
import os
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


def sample(name: str) -> np.ndarray:
    """A scikit-image bundled sample photo (H×W×3 uint8)."""
    import skimage.data

    return getattr(skimage.data, name)()


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **options)
    return out.getvalue()


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
