"""Issue 30: a thin strip of a few hundred bytes (1×20000 pixels) must not become a 256×5,120,000 image in
preprocessing. Against the real API (uvicorn) and a real worker, each path that resizes answers a thin image
within a second with 200 or 422, and neither process's peak memory (VmHWM, from /proc) grows by 200 MB."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.settings import Settings
from tests.conftest import BUILTIN_DATA, REDIS_URL, encode, sample
from tests.jobs.conftest import MODEL, running_service

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")

THIN = [(1, 20000), (20000, 1), (1, 65000)]  # (width, height)
GROWTH_LIMIT = 200 * 1024 * 1024


def peak_bytes(pid: int) -> int:
    """The process's peak resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def strip(width: int, height: int) -> bytes:
    rng = np.random.default_rng(width + height)
    return encode(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def service(builtin_store, tmp_path_factory):
    """The API (uvicorn) and one worker as real processes on a private prefix and queue."""
    token = uuid.uuid4().hex[:8]
    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-thin-{token}:", job_queue=f"test-thin-{token}",
                        data_dir=BUILTIN_DATA)
    with running_service(settings, tmp_path_factory.mktemp("thin-logs")) as service:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            yield http, service.server, service.workers.processes[0]


def predict(http, image):
    return http.post(f"/v1/models/{MODEL}/predict", files={"image": ("i.png", image, "image/png")})


def activations(http, image):
    return http.post(f"/v1/models/{MODEL}/activations", files={"image": ("i.png", image, "image/png")},
                     data={"spec": json.dumps({"layer": "_blocks.8._relu0"})})


def saliency(http, image):
    spec = {"kind": "saliency", "model": MODEL, "params": {"evaluate": False}}
    return http.post("/v1/jobs", files={"image": ("i.png", image, "image/png")}, data={"spec": json.dumps(spec)})


def dataset(http, image):
    return http.post("/v1/datasets", files=[("files", ("strip.png", image, "image/png")),
                                            ("files", ("cat.png", encode(sample("chelsea")[::4, ::4]), "image/png"))])


def job_end(http, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("finished", "failed", "canceled"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not end in {timeout} s")


def test_thin_images_answer_at_once_and_leave_memory_as_it_was(service):
    http, server, worker = service
    cat = encode(sample("chelsea"))
    # Warm both processes (sessions, the truncated layer, the twin) so that only the strips can grow them.
    for call in (predict, activations, dataset):
        assert call(http, cat).status_code in (200, 201)
    warm = saliency(http, cat)
    assert job_end(http, warm.json()["id"])["status"] == "finished"
    before = peak_bytes(server.pid), peak_bytes(worker.pid)

    jobs = []
    for width, height in THIN:
        image = strip(width, height)
        for call in (predict, activations, saliency, dataset):
            started = time.perf_counter()
            response = call(http, image)
            seconds = time.perf_counter() - started
            where = f"{call.__name__} of a {width}×{height} image"
            assert response.status_code in (200, 201, 202, 422), (where, response.status_code, response.text[:300])
            assert seconds < 1.0, f"{where} took {seconds:.2f} s"
            if call is saliency:
                jobs.append((where, response.json()["id"]))
            if call is dataset:
                assert response.json()["count"] == 2, (where, response.json())
    for where, job_id in jobs:
        job = job_end(http, job_id)
        assert job["status"] == "finished", (where, job["error"])
        assert job["result"]["artifacts"], where
    # A dataset job reads the strip too: its activations are made from the same window.
    made = http.post("/v1/datasets", files=[("files", (f"s{w}x{h}.png", strip(w, h), "image/png")) for w, h in THIN])
    spec = {"kind": "unit_stats", "model": MODEL, "dataset": made.json()["id"], "params": {"layer": "_relu1"}}
    stats = http.post("/v1/jobs", json=spec)
    assert stats.status_code == 202, stats.text[:300]
    assert job_end(http, stats.json()["id"])["status"] == "finished"

    after = peak_bytes(server.pid), peak_bytes(worker.pid)
    for name, old, new in zip(("API", "worker"), before, after, strict=True):
        assert new - old < GROWTH_LIMIT, f"the {name}'s peak memory grew by {(new - old) / 2**20:.0f} MB"
