"""The model store over a bucket, and deletes that race uploads of the same bytes."""

from __future__ import annotations

import threading
import time

import pytest

from core.model_record import InputSpec, ModelRecord, Preprocess
from core.stores.models import ModelStore
from tests.conftest import bucket_settings, new_bucket


def record(model_id: str, digest: str) -> ModelRecord:
    return ModelRecord(id=model_id, name=model_id, source="upload", input=InputSpec(channels=3, height=8, width=8),
                       preprocess=Preprocess(), num_classes=2,
                       onnx_sha256=digest, input_name="x", logits_name="y", size_bytes=5)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ModelStore:
    if request.param == "local":
        return ModelStore(tmp_path)
    endpoint = request.getfixturevalue("s3_endpoint")
    return ModelStore.open(bucket_settings(endpoint, new_bucket(endpoint), tmp_path))


def test_records_and_blobs_round_trip_and_the_last_delete_takes_the_blob(store):
    first = store.add(b"bytes", lambda digest: record("first", digest))
    second = store.add(b"bytes", lambda digest: record("second", digest))
    assert first.onnx_sha256 == second.onnx_sha256
    assert [r.id for r in store.list()] == ["first", "second"] and store.get("first") == first
    assert store.read_blob(first.onnx_sha256) == b"bytes"
    store.delete("first")
    assert store.get("first") is None and store.read_blob(first.onnx_sha256) == b"bytes"
    store.delete("second")
    assert store.storage.version(store.blob_key(first.onnx_sha256)) is None
    assert store.get("../etc/passwd") is None and store.readable() is None


def test_a_delete_never_removes_a_blob_that_an_upload_of_the_same_bytes_is_about_to_name(store):
    """The upload finds the blob in place (so writes nothing) and is slow to write its record; meanwhile the
    only other model with those bytes is deleted. The blob must outlive that delete."""
    old = store.add(b"same bytes", lambda digest: record("old", digest))
    found_blob, deleted = threading.Event(), threading.Event()

    def slow_record(digest: str) -> ModelRecord:
        found_blob.set()
        deleted.wait(1.0)  # without the lock, the delete runs here and takes the blob
        return record("new", digest)

    upload = threading.Thread(target=store.add, args=(b"same bytes", slow_record))
    upload.start()
    assert found_blob.wait(10)
    delete = threading.Thread(target=lambda: (store.delete("old"), deleted.set()))
    delete.start()
    upload.join(10)
    delete.join(10)
    assert store.get("old") is None and store.get("new") is not None
    assert store.read_blob(old.onnx_sha256) == b"same bytes"


def test_a_redis_lock_serialises_add_and_delete_across_processes(settings, tmp_path):
    """The API's lock (one per digest, in Redis): a second store object — another API process — waits for it."""
    import redis

    from core.jobs.store import JobStore

    locks = JobStore(redis.Redis.from_url(settings.redis_url), settings.redis_prefix, 60)
    one = ModelStore(tmp_path, lock=lambda d: locks.lock(f"modelblob:{d}", timeout_s=30, wait_s=30))
    two = ModelStore(tmp_path, lock=lambda d: locks.lock(f"modelblob:{d}", timeout_s=30, wait_s=30))
    one.add(b"shared", lambda digest: record("a", digest))
    entered = threading.Event()

    def slow(digest):
        entered.set()
        time.sleep(0.5)
        return record("b", digest)

    upload = threading.Thread(target=two.add, args=(b"shared", slow))
    upload.start()
    entered.wait(10)
    one.delete("a")  # waits for the upload's lock, then sees record b
    upload.join(10)
    assert one.read_blob(one.get("b").onnx_sha256) == b"shared"


class CountingStorage:
    """A storage that counts the version reads it passes on (on a bucket, each one a round trip)."""

    def __init__(self, inner):
        self.inner, self.versions = inner, 0

    def version(self, key: str):
        self.versions += 1
        return self.inner.version(key)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_bucket_record_is_trusted_for_a_moment_and_the_data_folder_is_asked_each_time(store, tmp_path, monkeypatch):
    """Two processes on one store: the reader's lookups ask a bucket for the record's version at most once per
    `RECORD_TRUST_S`, so another process's delete shows there at most that late; the data folder is asked at
    every lookup, and shows the delete at once."""
    from core.stores import models as store_module

    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    counting = CountingStorage(store.storage)
    reader = ModelStore(tmp_path / "reader", storage=counting)
    made = store.add(b"weights", lambda digest: record("net", digest))
    for _ in range(11):
        assert reader.get("net") == made
    remote = store.storage.remote
    assert counting.versions == (1 if remote else 11)
    store.delete("net")
    if remote:
        clock[0] += store_module.RECORD_TRUST_S / 2
        assert reader.get("net") == made  # still trusted
        clock[0] += store_module.RECORD_TRUST_S
    assert reader.get("net") is None
