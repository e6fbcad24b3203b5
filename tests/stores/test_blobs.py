"""Verified blob reads: a worker fetches a bucket's blob once however many jobs want it, keeps it in a
bounded cache, and fetches it again when its copy no longer matches the digest."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import Unavailable
from core.stores.blobs import Blobs
from core.stores.storage import LocalStorage, Missing, open_storage
from tests.conftest import bucket_settings, new_bucket


def blob(n: int, size: int = 200_000) -> tuple[bytes, str]:
    data = os.urandom(size - 8) + n.to_bytes(8, "little")
    return data, hashlib.sha256(data).hexdigest()


class Counting:
    """A storage that counts downloads and can hold them until released (to line concurrent readers up)."""

    def __init__(self, inner):
        self.inner, self.downloads, self.gate = inner, 0, threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def download(self, key, path):
        self.downloads += 1
        self.gate.wait(10)
        return self.inner.download(key, path)


@pytest.fixture()
def bucket(s3_endpoint, tmp_path):
    return open_storage(bucket_settings(s3_endpoint, new_bucket(s3_endpoint), tmp_path))


def test_concurrent_readers_wait_for_one_download_and_get_verified_bytes(bucket, tmp_path):
    data, digest = blob(1)
    bucket.put(f"models/blobs/{digest}.onnx", data)
    counting = Counting(bucket)
    blobs = Blobs(counting, tmp_path / "machine", max_bytes=10**9)
    counting.gate.clear()
    with ThreadPoolExecutor(8) as pool:
        reads = [pool.submit(blobs.read, f"models/blobs/{digest}.onnx", digest) for _ in range(8)]
        threading.Timer(0.3, counting.gate.set).start()
        assert all(r.result(30) == data for r in reads)
    assert counting.downloads == 1 and blobs.fetches == 1
    assert blobs.read(f"models/blobs/{digest}.onnx", digest) == data and counting.downloads == 1


def test_a_corrupted_cached_copy_is_detected_and_fetched_again(bucket, tmp_path):
    data, digest = blob(2)
    bucket.put(f"models/blobs/{digest}.onnx", data)
    blobs = Blobs(bucket, tmp_path / "machine", max_bytes=10**9)
    copy = blobs.file(f"models/blobs/{digest}.onnx", digest)
    damaged = bytearray(copy.read_bytes())
    damaged[1000] ^= 0xFF
    copy.write_bytes(bytes(damaged))
    assert blobs.read(f"models/blobs/{digest}.onnx", digest) == data
    assert blobs.corrupt == 1 and blobs.fetches == 2 and copy.read_bytes() == data


def test_a_blob_that_does_not_match_its_name_is_refused(bucket, tmp_path):
    data, digest = blob(3)
    bucket.put(f"models/blobs/{digest}.onnx", data + b"tampered")
    blobs = Blobs(bucket, tmp_path / "machine", max_bytes=10**9)
    with pytest.raises(Unavailable) as raised:
        blobs.read(f"models/blobs/{digest}.onnx", digest)
    assert raised.value.code == "blob_corrupt"
    assert not list((tmp_path / "machine" / "blob-cache").glob("*/*.onnx"))
    with pytest.raises(Missing):
        blobs.read(f"models/blobs/{'0' * 64}.onnx", "0" * 64)


def test_the_cache_stays_within_its_bytes_least_recently_used_first(bucket, tmp_path):
    made = [blob(n, 100_000) for n in range(5)]
    for data, digest in made:
        bucket.put(f"models/blobs/{digest}.onnx", data)
    blobs = Blobs(bucket, tmp_path / "machine", max_bytes=250_000)
    for _, digest in made[:2]:
        blobs.read(f"models/blobs/{digest}.onnx", digest)
    blobs.read(f"models/blobs/{made[0][1]}.onnx", made[0][1])  # 0 is now more recent than 1
    os.utime(blobs.file(f"models/blobs/{made[0][1]}.onnx", made[0][1]), (2e9, 2e9))
    blobs.read(f"models/blobs/{made[2][1]}.onnx", made[2][1])
    cached = {p.stem for p in (tmp_path / "machine" / "blob-cache").glob("*/*.onnx")}
    assert cached == {made[0][1], made[2][1]} and blobs.held_bytes() <= 250_000 and blobs.evictions == 1


def test_a_local_store_verifies_its_files_too(tmp_path):
    storage = LocalStorage(tmp_path)
    data, digest = blob(4)
    storage.put(f"models/blobs/{digest}.onnx", data)
    blobs = Blobs(storage, tmp_path, max_bytes=1)
    assert blobs.file(f"models/blobs/{digest}.onnx", digest) == tmp_path / f"models/blobs/{digest}.onnx"
    (tmp_path / f"models/blobs/{digest}.onnx").write_bytes(data[:-1])
    with pytest.raises(Unavailable):
        blobs.read(f"models/blobs/{digest}.onnx", digest)
