"""The model store: ONNX files named by content hash plus one JSON record per model, in a `Storage`.

Keys: `models/blobs/<sha256>.onnx` (the file, verified against its name whenever it is read; see
`core.stores.blobs`) and `models/records/<id>.json`. The storage is the data folder by default, or a
bucket shared by every machine (`storage_url`); each write is atomic, so a half-written file never shows.

A blob is shared by every record of the same bytes. Adding a model (blob, then record) and deleting
one (record, then the blob when no record names it any more) hold one lock per digest — across
processes when the lock comes from Redis (the API's) — so a delete never removes a blob that an
upload of the same bytes has just found in place and is about to name in its record.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import NamedTuple

from core.model_record import ModelRecord
from core.settings import Settings
from core.stores.blobs import Blobs
from core.stores.storage import LocalStorage, Missing, Storage, atomic_write, open_storage

__all__ = ["ModelStore", "atomic_write"]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
RECORDS = "models/records"
READABLE_CHECK_TTL_S = 3.0
# How long a record read from a bucket is trusted before its version is asked again: every forward view looks its
# model up, on the event loop, and a bucket's answer is a network round trip. Records are written once and only
# ever deleted, so the one thing this delays is another process's delete, by at most this long.
RECORD_TRUST_S = 2.0


class _Cached(NamedTuple):
    version: str
    record: ModelRecord
    read_at: float  # `time.monotonic()` when `version` was last read from the storage


class _LocalLocks:
    """One lock per digest, within this process (the default; the API passes Redis locks)."""

    def __init__(self):
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, digest: str) -> ContextManager:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())


class ModelStore:
    """Records and ONNX blobs; ids are validated so no client string becomes a key."""

    def __init__(self, root: Path | None = None, *, storage: Storage | None = None, blobs: Blobs | None = None,
                 lock: Callable[[str], ContextManager] | None = None):
        self.storage = storage or LocalStorage(Path(root))
        local = self.storage.local_path("models")
        self.root = local if local is not None else Path(root or ".") / "models"
        self.blobs = blobs or Blobs(self.storage, Path(root or "."), max_bytes=2**62)
        self.lock = lock or _LocalLocks()
        self._guard = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._readable: tuple[float, str | None] = (-READABLE_CHECK_TTL_S, None)  # (when checked, the answer)

    @classmethod
    def open(cls, settings: Settings, lock: Callable[[str], ContextManager] | None = None) -> ModelStore:
        """The store `settings` name: `storage_url` (default the data folder), cached under `data_dir`."""
        storage = open_storage(settings)
        return cls(settings.data_dir, storage=storage, lock=lock,
                   blobs=Blobs(storage, settings.data_dir, settings.blob_cache_bytes))

    def readable(self) -> str | None:
        """None when the store can be read, else the reason (for /readyz). The answer is kept for a few seconds:
        a load balancer probing every API process often must not turn into as many bucket listings."""
        checked_at, reason = self._readable
        if time.monotonic() - checked_at < READABLE_CHECK_TTL_S:
            return reason
        reason = self.storage.readable()
        records = self.storage.local_path(RECORDS)
        if reason is None and records is not None and not (records.is_dir() and os.access(records, os.R_OK)):
            reason = f"model store {self.root} is not readable"
        self._readable = (time.monotonic(), reason)
        return reason

    # Blobs.
    def blob_key(self, digest: str) -> str:
        if not _DIGEST.match(digest):
            raise ValueError("not a sha256 digest")
        return f"models/blobs/{digest}.onnx"

    def blob_path(self, digest: str) -> Path:
        """A local file holding the blob (the stored file itself, or this machine's verified copy)."""
        local = self.storage.local_path(self.blob_key(digest))
        return local if local is not None else self.blobs.file(self.blob_key(digest), digest)

    def blob_file(self, digest: str) -> Path:
        """A local file holding the blob, verified against its digest (fetched once when the storage is remote);
        raises `Missing` when the store has no such blob, `Unavailable` when it cannot be read."""
        return self.blobs.file(self.blob_key(digest), digest)

    def read_blob(self, digest: str) -> bytes:
        """The blob's bytes, verified against its digest."""
        return self.blobs.read(self.blob_key(digest), digest)

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        import hashlib

        digest = digest or hashlib.sha256(data).hexdigest()
        key = self.blob_key(digest)
        if self.storage.version(key) is None:
            self.storage.put(key, data)
        return digest

    def add(self, data: bytes, make_record: Callable[[str], ModelRecord]) -> ModelRecord:
        """Keep `data` and the record `make_record(digest)` names it in, as one step against deletes."""
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        with self.lock(digest):
            self.put_blob(data, digest)
            record = make_record(digest)
            self.put(record)
        return record

    # Records.
    def put(self, record: ModelRecord) -> None:
        self.storage.put(self._record_key(record.id), record.model_dump_json().encode())
        with self._guard:
            self._cache.pop(record.id, None)

    def get(self, model_id: str) -> ModelRecord | None:
        """The record, or None. From the data folder, its version is read each time (one `stat`); from a bucket,
        a record read in the last `RECORD_TRUST_S` seconds is trusted as it is."""
        if not _ID.match(model_id or ""):
            return None
        if self.storage.remote:
            with self._guard:
                hit = self._cache.get(model_id)
            if hit is not None and time.monotonic() - hit.read_at < RECORD_TRUST_S:
                return hit.record
        key = self._record_key(model_id)
        return self._read(model_id, key, self.storage.version(key))

    def _read(self, model_id: str, key: str, version: str | None) -> ModelRecord | None:
        if version is None:
            return None
        now = time.monotonic()
        with self._guard:
            hit = self._cache.get(model_id)
            if hit and hit.version == version:
                self._cache[model_id] = hit._replace(read_at=now)
                return hit.record
        try:
            record = ModelRecord.model_validate_json(self.storage.get(key))
        except Missing:
            return None
        with self._guard:
            self._cache[model_id] = _Cached(version, record, now)
        return record

    def list(self) -> list[ModelRecord]:
        found = []
        for key, version in sorted(self.storage.listed(RECORDS).items()):
            model_id = key.rsplit("/", 1)[-1].removesuffix(".json")
            if key.endswith(".json") and _ID.match(model_id):
                record = self._read(model_id, key, version)
                if record is not None:
                    found.append(record)
        return found

    def delete(self, model_id: str) -> None:
        record = self.get(model_id)
        if record is None:
            return
        with self.lock(record.onnx_sha256):
            self.storage.delete(self._record_key(model_id))
            with self._guard:
                self._cache.pop(model_id, None)
            if not any(r.onnx_sha256 == record.onnx_sha256 for r in self.list()):
                self.storage.delete(self.blob_key(record.onnx_sha256))

    def _record_key(self, model_id: str) -> str:
        if not _ID.match(model_id):
            raise ValueError(f"bad model id {model_id!r}")
        return f"{RECORDS}/{model_id}.json"
