"""Scale-out without a shared disk: the API and two workers share only Redis and an S3 bucket (moto's server
over HTTP). The API has one data folder, each worker its own, empty at start. Models and datasets uploaded
to the API are used by jobs on both workers; a worker's corrupted copy of a blob is detected by its digest
and fetched again."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import bucket_settings, encode, new_bucket, sample
from tests.datasets.conftest import photo_files
from tests.jobs.conftest import wait_for
from tests.onnx_builders import ClassicNet, export, seeded

LABELS = "\n".join(f"class {i}" for i in range(10))


def bucket_env(settings) -> dict:
    """What a worker on another machine is told: the bucket and its credentials (its data folder is its own)."""
    return {"CONVSCOPE_STORAGE_URL": settings.storage_url, "CONVSCOPE_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "CONVSCOPE_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
            "CONVSCOPE_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value()}


@pytest.fixture(scope="module")
def cluster(s3_endpoint, job_settings, workers, tmp_path_factory):
    """(client on queue a, client on queue b, {queue: worker data folder}); one worker serves each queue."""
    bucket = new_bucket(s3_endpoint)
    api_dir = tmp_path_factory.mktemp("api-data")
    shared = {"redis_prefix": job_settings.redis_prefix, "job_time_limit_scale": job_settings.job_time_limit_scale}
    per_queue, clients, folders = {}, [], {}
    for name in ("a", "b"):
        settings = bucket_settings(s3_endpoint, bucket, api_dir, job_queue=f"{job_settings.job_queue}-s3{name}",
                                   **shared)
        folders[name] = tmp_path_factory.mktemp(f"worker-{name}-data")
        per_queue[name] = settings
        workers.start(settings.model_copy(update={"data_dir": folders[name]}), wait=False, **bucket_env(settings))
    for process, name in zip(workers.processes[-2:], ("a", "b")):
        workers.wait_ready(process, per_queue[name], timeout=120)
    for name in ("a", "b"):
        client = TestClient(create_app(per_queue[name]), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
    yield clients[0], clients[1], folders, per_queue["a"], workers
    for client in clients:
        client.__exit__(None, None, None)


_model_bytes: list[bytes] = []


def upload_model(client, name: str) -> dict:
    """Upload the test's model file (the same bytes every time)."""
    if not _model_bytes:
        _model_bytes.append(export(seeded(ClassicNet()), 9))
    data = _model_bytes[0]
    response = client.post("/v1/models", files={"file": (f"{name}.onnx", data, "application/octet-stream"),
                                                "labels": ("labels.txt", LABELS.encode(), "text/plain")},
                           data={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def run(client, spec: dict, image: bytes | None = None) -> dict:
    files = {"image": ("image.png", image, "image/png")} if image is not None else None
    response = client.post("/v1/jobs?wait=60", files=files, data={"spec": json.dumps(spec)}) if files else \
        client.post("/v1/jobs?wait=60", json=spec)
    assert response.status_code in (200, 202), response.text
    job = wait_for(client, response.json()["id"], timeout=120)
    assert job["status"] == "finished", job
    return job


def ran_on(settings, job_id: str) -> str:
    return redis.Redis.from_url(settings.redis_url).hget(f"{settings.redis_prefix}job:{job_id}", "worker").decode()


def cached_blobs(folder: Path) -> dict[str, Path]:
    return {p.name.split(".")[0]: p for p in (folder / "blob-cache").glob("*/*")
            if not p.name.startswith(".") and not p.parent.name.startswith(".")}  # not the `.locks` folder


def test_uploads_reach_workers_that_share_only_redis_and_the_bucket(cluster):
    client_a, client_b, folders, settings, _ = cluster
    model = upload_model(client_a, "bucket net")
    assert client_b.get(f"/v1/models/{model['id']}").status_code == 200  # another API process sees it at once
    image = encode(sample("chelsea"))
    files = [("files", (f"{n}-{name}", data, "image/png")) for n in range(2) for name, data in photo_files()]
    dataset = client_a.post("/v1/datasets", files=files)
    assert dataset.status_code == 201, dataset.text
    dataset_id = dataset.json()["id"]

    for client, name, target in ((client_a, "a", 1), (client_b, "b", 2)):  # params differ: no job answered from cache
        job = run(client, {"kind": "saliency", "model": model["id"], "params": {"target": target}}, image)
        assert ran_on(settings, job["id"]).startswith(f"{settings.job_queue[:-1]}{name}-"), ran_on(settings, job["id"])
        stats = run(client, {"kind": "unit_stats", "model": model["id"], "dataset": dataset_id,
                             "params": {"layer": model["layers"][0]["name"], "dead_fraction": target / 10}})
        assert ran_on(settings, stats["id"]).startswith(f"{settings.job_queue[:-1]}{name}-")
        units = client.get(stats["result"]["artifacts"][0]["url"]).content
        assert json.loads(units), units
        blobs = cached_blobs(folders[name])
        assert digest_of(settings, model["id"]) in blobs  # the model file, fetched into this worker's own folder
        assert len(blobs) >= 2  # and the dataset's images
        assert not (folders[name] / "models").exists() and not (folders[name] / "datasets").exists()


def digest_of(settings, model_id: str) -> str:
    from core.stores.models import ModelStore

    return ModelStore.open(settings).get(model_id).onnx_sha256


def test_a_corrupted_cached_blob_is_detected_by_its_digest_and_fetched_again(cluster):
    client_a, client_b, folders, settings, workers = cluster
    digest = hashlib.sha256(_model_bytes[0]).hexdigest()
    copy = cached_blobs(folders["b"]).get(digest)
    assert copy is not None, "the first test leaves worker b a copy of the model"
    damaged = bytearray(copy.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    copy.write_bytes(bytes(damaged))
    again = upload_model(client_b, "same bytes again")  # a new id, the same blob: worker b must read its copy
    job = run(client_b, {"kind": "gradcam", "model": again["id"], "params": {"target": 3}}, encode(sample("coffee")))
    assert ran_on(settings, job["id"]).startswith(f"{settings.job_queue[:-1]}b-")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == digest
    deadline = time.monotonic() + 20
    while "does not match its digest" not in worker_log(workers, "b"):
        assert time.monotonic() < deadline, "worker b did not report the corrupted copy"
        time.sleep(0.2)


def worker_log(workers, name: str) -> str:
    return "".join(p.read_text(errors="replace") for p in workers.log_dir.glob(f"*-s3{name}-w*.log"))
