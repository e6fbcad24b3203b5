"""Listing, reading and deleting datasets through the real app, with API keys: each key sees and deletes
only its own; a deleted dataset's files and records are gone."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.conftest import REDIS_URL, clean_prefix
from tests.test_datasets import data_dir, small

ALICE, BOB = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}


@pytest.fixture()
def keyed(tmp_path):
    """(test client with keys alice and bob, its settings), on a private data dir and Redis prefix."""
    from service.app import create_app

    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-dsm-{uuid.uuid4().hex[:8]}:",
                        data_dir=data_dir(tmp_path), api_keys="alice:key-a,bob:key-b", dataset_ttl_s=3600)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, settings
    clean_prefix(settings.redis_prefix)


def upload(client, headers: dict, *names: str, junk: bool = False) -> dict:
    files = [("files", (f"{name}.png", small(name, 32), "image/png")) for name in names]
    files += [("files", ("notes.txt", b"not an image", "text/plain"))] if junk else []
    response = client.post("/v1/datasets", headers=headers, files=files)
    assert response.status_code == 201, response.text
    return response.json()


def test_list_shows_only_the_callers_datasets_newest_first(keyed):
    client, settings = keyed
    first = upload(client, ALICE, "chelsea")
    second = upload(client, ALICE, "coffee", "rocket")
    theirs = upload(client, BOB, "camera")
    listed = client.get("/v1/datasets", headers=ALICE)
    assert listed.status_code == 200
    datasets = listed.json()["datasets"]
    assert [(d["id"], d["count"]) for d in datasets] == [(second["id"], 2), (first["id"], 1)]
    for d in datasets:
        created, expires = datetime.fromisoformat(d["created_at"]), datetime.fromisoformat(d["expires_at"])
        assert (expires - created).total_seconds() == pytest.approx(settings.dataset_ttl_s)
    assert [d["id"] for d in client.get("/v1/datasets", headers=BOB).json()["datasets"]] == [theirs["id"]]
    assert client.get("/v1/datasets").status_code == 401


def test_get_returns_what_was_rejected_at_creation(keyed):
    client, _ = keyed
    created = upload(client, ALICE, "chelsea", junk=True)
    assert [r["name"] for r in created["rejected"]] == ["notes.txt"]
    info = client.get(f"/v1/datasets/{created['id']}", headers=ALICE).json()
    assert info["rejected"] == created["rejected"] and info["count"] == 1
    assert info["images"] == [{"index": 0, "name": "chelsea.png", "width": 32, "height": 32}]
    assert set(info) == {"id", "name", "count", "created_at", "expires_at", "images", "rejected"}


def test_delete_removes_the_files_and_then_it_is_404(keyed):
    client, settings = keyed
    mine = upload(client, ALICE, "chelsea", "coffee")
    kept = upload(client, ALICE, "rocket")
    folder = settings.data_dir / "datasets" / mine["id"]
    assert (folder / "manifest.json").exists()
    response = client.delete(f"/v1/datasets/{mine['id']}", headers=ALICE)
    assert response.status_code == 204 and response.content == b""
    gone = client.get(f"/v1/datasets/{mine['id']}", headers=ALICE)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "dataset_not_found"
    assert not folder.exists() and not list((settings.data_dir / "datasets").glob(".tmp-*"))
    assert [d["id"] for d in client.get("/v1/datasets", headers=ALICE).json()["datasets"]] == [kept["id"]]
    again = client.delete(f"/v1/datasets/{mine['id']}", headers=ALICE)
    assert again.status_code == 404 and again.json()["error"]["code"] == "dataset_not_found"
    job = client.post("/v1/jobs", headers=ALICE, json={"kind": "unit_stats", "model": "efficientnet-lite0",
                                                       "dataset": mine["id"]})
    assert job.status_code == 404 and job.json()["error"]["code"] == "dataset_not_found"


def test_another_keys_dataset_cannot_be_deleted(keyed):
    client, _ = keyed
    mine = upload(client, ALICE, "chelsea")
    other = client.delete(f"/v1/datasets/{mine['id']}", headers=BOB)
    assert other.status_code == 404 and other.json()["error"]["code"] == "dataset_not_found"
    assert client.get(f"/v1/datasets/{mine['id']}", headers=ALICE).status_code == 200
    assert client.delete(f"/v1/datasets/{mine['id']}").status_code == 401
    for bad in ("0" * 32, "x", ".tmp-x", "..%2F..%2Fetc"):  # the last never reaches the route: plain 404
        response = client.delete(f"/v1/datasets/{bad}", headers=ALICE)
        assert response.status_code == 404 and response.json()["error"]["code"].endswith("not_found"), bad


def test_a_key_stores_one_upload_at_a_time_and_another_key_is_not_held(keyed):
    """While alice's upload lock is held (another API process storing her previous upload), her next upload is 429
    `upload_in_progress` with Retry-After; bob's goes through; once the lock is free, hers does too."""
    from core.redis_client import connect

    client, settings = keyed
    held = connect(settings.redis_url).lock(f"{settings.redis_prefix}lock:datasets:alice", timeout=60)
    assert held.acquire(blocking=False)
    try:
        files = [("files", ("cat.png", small("chelsea", 32), "image/png"))]
        refused = client.post("/v1/datasets", headers=ALICE, files=files)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "upload_in_progress" and refused.headers["retry-after"] == "10"
        upload(client, BOB, "coffee")
    finally:
        held.release()
    upload(client, ALICE, "chelsea")
    assert [d["count"] for d in client.get("/v1/datasets", headers=ALICE).json()["datasets"]] == [1]
