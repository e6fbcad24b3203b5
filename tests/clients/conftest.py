"""The real service (uvicorn) and one real worker on the real Redis, with an API key, as the clients see them."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import Settings
from tests.conftest import BUILTIN_DATA, REDIS_URL, ROOT, encode, sample
from tests.jobs.conftest import running_service

MODEL = "efficientnet-lite0"
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class Service:
    url: str
    key: str


@pytest.fixture(scope="session")
def service(builtin_store, tmp_path_factory) -> Service:
    """`uvicorn service.app:create_app` and `python -m workers` on a session-own prefix and queue, keys on."""
    token = uuid.uuid4().hex[:8]
    key = secrets.token_urlsafe(24)
    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-cl-{token}:", job_queue=f"test-cl-{token}",
                        data_dir=BUILTIN_DATA, api_keys=f"clients:{key}")
    logs = tmp_path_factory.mktemp("client-logs")
    with running_service(settings, logs, timeout=START_TIMEOUT_S, CONVSCOPE_API_KEYS=settings.api_keys) as service:
        yield Service(url=service.url, key=key)


@pytest.fixture(scope="session")
def cat_file(tmp_path_factory) -> Path:
    """A photo of a cat (scikit-image's `chelsea`) as a JPEG file, as a user has one."""
    path = tmp_path_factory.mktemp("images") / "cat.jpg"
    path.write_bytes(encode(sample("chelsea"), "JPEG", quality=90))
    return path


def readme_block(language: str) -> str:
    """The README's "Clients" code block in `language`."""
    section = (ROOT / "README.md").read_text().split("\n## Clients\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]
