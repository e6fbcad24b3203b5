"""Datasets: sets of images uploaded together, kept in the storage under names the service makes up.

Keys under `datasets/<id>/` (in the data folder, or the bucket every machine shares): `00000.<ext>` …
one object per accepted image (the uploaded bytes, re-validated by `core.images.decode`; its SHA-256
is in the manifest and every read is verified against it), `manifest.json` (names, sizes, digests,
rejected members) and `meta.json` (owner, display name, creation time, count: small, so quota, listing and
expiry scans stay cheap). `meta.json` is written last: a dataset exists once it is there, so readers see all
of it or nothing; a delete removes it first, so the dataset is 404 at once and a job still reading
it fails with `dataset_not_found` at its next image (on a worker that has cached the images, the
job may finish on its copies). A worker reading a bucket keeps verified copies of the images in its
blob cache (`core.stores.blobs`), so a dataset used again is not fetched again.

A dataset belongs to the key that uploaded it; any other key gets 404. Expired datasets
(`dataset_ttl_s`) are 404 too and are swept away by later uploads, with the leftovers of uploads that
crashed before their `meta.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core import images
from core.errors import ConvscopeError, Invalid, NotFound, Overloaded, TooLarge
from core.settings import Settings
from core.stores import archives
from core.stores.blobs import Blobs
from core.stores.storage import LocalStorage, Missing, Storage, open_storage
from core.stores.usage import Refused

log = logging.getLogger("convscope.datasets")
_ID = re.compile(r"^[0-9a-f]{32}$")
EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg", "tiff": "tif"}
MAX_NAME = 200  # characters of a dataset's display name
STALE_UPLOAD_S = 3600  # a dataset folder this old without its meta.json was left by a crashed upload
_opened: dict[tuple, DatasetStore] = {}
_opened_lock = threading.Lock()


@dataclass(frozen=True)
class Upload:
    """One uploaded part: an archive (`file`) or a single image (one of `files`)."""

    name: str
    file: BinaryIO
    size: int
    archive: bool


@dataclass(frozen=True)
class Entry:
    index: int
    name: str
    width: int
    height: int
    file: str
    sha256: str | None = None  # None only in datasets stored before digests were kept


@dataclass(frozen=True)
class Dataset:
    """A stored dataset as workers and routes see it."""

    id: str
    owner: str | None
    created_at: float
    entries: list[Entry]
    rejected: list[dict]
    reader: Callable[[str, Entry], bytes]
    name: str | None = None  # the uploaded file's name (or the `name` part); None in datasets stored before names

    @property
    def count(self) -> int:
        return len(self.entries)

    def read(self, index: int) -> bytes:
        """The stored bytes of image `index`, verified against their digest (`OSError` once they are gone)."""
        try:
            return self.reader(self.id, self.entries[index])
        except Missing:
            raise FileNotFoundError(self.entries[index].file) from None

    def image(self, index: int) -> tuple[Entry, bytes]:
        """Image `index` for a client: its entry and verified bytes; 404 `dataset_image_not_found` for an index
        outside 0..count-1, and `dataset_not_found` once the files are gone (deleted meanwhile)."""
        if not 0 <= index < self.count:
            raise NotFound(f"dataset {self.id} has no image {index}: its images are 0..{self.count - 1}",
                           code="dataset_image_not_found", details={"count": self.count})
        try:
            return self.entries[index], self.read(index)
        except FileNotFoundError:
            raise NotFound(f"no dataset with id {self.id!r} (it may have expired or been deleted)",
                           code="dataset_not_found") from None

    def summary(self) -> dict:
        """`GET /v1/datasets/{id}` (less the times, which the store knows)."""
        return {"id": self.id, "name": self.name, "count": self.count, "images": [
            {"index": e.index, "name": e.name, "width": e.width, "height": e.height} for e in self.entries],
            "rejected": self.rejected}


class DatasetStore:
    """Datasets in a storage; ids are validated so no client string becomes a key."""

    def __init__(self, data_dir: Path, ttl_s: int, *, storage: Storage | None = None, blobs: Blobs | None = None):
        self.storage = storage or LocalStorage(Path(data_dir))
        self.blobs = blobs or Blobs(self.storage, Path(data_dir), max_bytes=2**62)
        self.ttl_s = ttl_s
        self._metas_seen: dict[str, dict] = {}  # id → meta.json (written once, never changed)

    @classmethod
    def open(cls, settings: Settings) -> DatasetStore:
        """The store `settings` name: `storage_url` (default the data folder), cached under `data_dir`; one per
        process and configuration (a bucket client is not made per request)."""
        where = (settings.storage_url, str(settings.data_dir), settings.dataset_ttl_s, settings.s3_endpoint_url,
                 settings.blob_cache_bytes)
        with _opened_lock:
            if where not in _opened:
                storage = open_storage(settings)
                _opened[where] = cls(settings.data_dir, settings.dataset_ttl_s, storage=storage,
                                     blobs=Blobs(storage, settings.data_dir, settings.blob_cache_bytes))
            return _opened[where]

    def _read_image(self, dataset_id: str, entry: Entry) -> bytes:
        key = f"datasets/{dataset_id}/{entry.file}"
        return self.blobs.read(key, entry.sha256) if entry.sha256 else self.storage.get(key)

    def _meta(self, dataset_id: str) -> dict | None:
        if dataset_id in self._metas_seen:
            return self._metas_seen[dataset_id]
        try:
            meta = json.loads(self.storage.get(f"datasets/{dataset_id}/meta.json"))
        except (Missing, ValueError):
            return None
        self._metas_seen[dataset_id] = meta
        return meta

    def get(self, dataset_id: str, owner: str | None) -> Dataset:
        """The dataset `dataset_id` if `owner` uploaded it and it has not expired; else 404."""
        meta = None
        if _ID.match(dataset_id or ""):
            self._metas_seen.pop(dataset_id, None)  # a get always asks the storage: the dataset may be gone
            meta = self._meta(dataset_id)
        if meta is None or meta.get("owner") != owner or self._expired(meta):
            raise NotFound(f"no dataset with id {dataset_id!r} (it may have expired or been deleted)",
                           code="dataset_not_found")
        try:
            manifest = json.loads(self.storage.get(f"datasets/{dataset_id}/manifest.json"))
        except Missing:
            raise NotFound(f"no dataset with id {dataset_id!r} (it may have expired or been deleted)",
                           code="dataset_not_found") from None
        return Dataset(id=dataset_id, owner=owner, created_at=meta["created_at"],
                       entries=[Entry(**e) for e in manifest["images"]], rejected=manifest["rejected"],
                       reader=self._read_image, name=meta.get("name"))

    def _expired(self, meta: dict) -> bool:
        return time.time() > float(meta.get("created_at", 0)) + self.ttl_s

    def expires_at(self, created_at: float) -> float:
        """When a dataset created at `created_at` expires (Unix seconds)."""
        return created_at + self.ttl_s

    def listed(self, owner: str | None) -> list[dict]:
        """`owner`'s live datasets from their small `meta.json` files, newest first: {id, name, count, created_at}."""
        return [{"id": m["id"], "name": m.get("name"), "count": int(m.get("count", 0)),
                 "created_at": float(m["created_at"])}
                for m in sorted(self._live(owner), key=lambda m: (-float(m["created_at"]), m["id"]))]

    def delete(self, dataset_id: str, owner: str | None) -> None:
        """Remove `owner`'s dataset `dataset_id` and its files (404 when there is none for `owner`)."""
        dataset = self.get(dataset_id, owner)
        self.storage.delete(f"datasets/{dataset.id}/meta.json")  # gone for every reader from here on
        self._metas_seen.pop(dataset.id, None)
        self.storage.delete_prefix(f"datasets/{dataset.id}")  # a crash here leaves files that `sweep` removes
        log.info("dataset deleted", extra={"fields": {"dataset": dataset.id, "images": dataset.count}})

    def held_by(self, owner: str | None) -> int:
        """How many live datasets `owner` holds."""
        return len(self._live(owner))

    def bytes_held_by(self, owner: str | None) -> int:
        """Bytes of image files in `owner`'s live datasets (as their `meta.json` says; 0 for older ones)."""
        return _bytes(self._live(owner))

    def _live(self, owner: str | None) -> list[dict]:
        """The `meta.json` (with its `id`) of each of `owner`'s datasets that has not expired: one storage listing."""
        return [meta for meta in self._metas() if meta.get("owner") == owner and not self._expired(meta)]

    def _metas(self) -> Iterator[dict]:
        ids = [name for name in self.storage.children("datasets") if _ID.match(name)]
        for gone in set(self._metas_seen) - set(ids):
            self._metas_seen.pop(gone, None)
        for dataset_id in ids:
            meta = self._meta(dataset_id)
            if meta is not None:
                yield meta | {"id": dataset_id}

    def sweep(self) -> int:
        """Delete expired datasets and the leftovers of crashed uploads; returns how many went."""
        gone = 0
        for meta in list(self._metas()):
            if self._expired(meta):
                self.storage.delete(f"datasets/{meta['id']}/meta.json")
                self.storage.delete_prefix(f"datasets/{meta['id']}")
                gone += 1
        for dataset_id in self.storage.children("datasets"):
            if _ID.match(dataset_id) and self._meta(dataset_id) is None:
                started = self.storage.modified(f"datasets/{dataset_id}")
                if started is None or time.time() - started > STALE_UPLOAD_S:
                    self.storage.delete_prefix(f"datasets/{dataset_id}")
        local = self.storage.local_path("datasets")
        if local is not None and local.is_dir():  # `.tmp-*` folders of an interrupted local delete
            for folder in local.glob(".tmp-*"):
                try:
                    if time.time() - folder.stat().st_mtime > STALE_UPLOAD_S:
                        self.storage.delete_prefix(f"datasets/{folder.name}")
                except OSError:
                    continue
        return gone

    def create(self, uploads: Iterable[Upload], owner: str | None, settings: Settings,
               name: str | None = None) -> tuple[Dataset, list[dict]]:
        """Validate every image of the upload, keep the accepted ones; returns (dataset, rejected). The dataset's
        display `name` is the one given, else the uploaded file's (`upload_name`)."""
        uploads = list(uploads)
        name = archives.display_name(name.strip())[:MAX_NAME] if name and name.strip() else upload_name(uploads)
        self.sweep()
        live = self._live(owner)
        if len(live) >= settings.max_datasets_per_key:
            raise Overloaded(f"this key already holds {settings.max_datasets_per_key} datasets; delete one or wait for "
                             f"some to expire", code="dataset_quota", retry_after=3600)
        dataset_id = uuid.uuid4().hex
        prefix = f"datasets/{dataset_id}"
        stored = _Stored(_bytes(live), settings.max_dataset_bytes_per_key)
        try:
            entries, rejected = _ingest(uploads, lambda file, data: self.storage.put(f"{prefix}/{file}", stored(data)),
                                        settings)
            if not entries:
                raise Invalid("the upload holds no image convscope can read", code="empty_dataset",
                              details={"rejected": rejected[:100]})
            now = time.time()
            self.storage.put(f"{prefix}/manifest.json", _json({"images": [e.__dict__ for e in entries],
                                                                "rejected": rejected}))
            self.storage.put(f"{prefix}/meta.json", _json({"owner": owner, "name": name, "created_at": now,
                                                           "count": len(entries), "bytes": stored.added}))
        except BaseException:
            self.storage.delete_prefix(prefix)
            raise
        log.info("dataset stored", extra={"fields": {"dataset": dataset_id, "images": len(entries),
                                                     "rejected": len(rejected)}})
        return Dataset(dataset_id, owner, now, entries, rejected, self._read_image, name), rejected


class _Stored:
    """Counts the bytes an upload stores, against the key's `max_dataset_bytes_per_key` (with what it holds)."""

    def __init__(self, held: int, limit: int):
        self.held, self.limit, self.added = held, limit, 0

    def __call__(self, data: bytes) -> bytes:
        if self.held + self.added + len(data) > self.limit:
            raise Refused("dataset_bytes", self.held + self.added, len(data), self.limit).error()
        self.added += len(data)
        return data


def upload_name(uploads: list[Upload]) -> str | None:
    """What a person calls an upload: the archive's file name, the one image's, or the first image's and how many
    more ("cat.jpg and 11 more"); base names only, as `archives.display_name` shows them."""
    names = [archives.display_name(u.name.replace("\\", "/").rsplit("/", 1)[-1]) for u in uploads if u.name]
    if not names:
        return None
    more = len(uploads) - 1
    return (names[0] if not more else f"{names[0]} and {more} more")[:MAX_NAME]


def _bytes(metas: list[dict]) -> int:
    """Bytes of image files in these datasets (as their `meta.json` says; 0 for older ones)."""
    return sum(int(meta.get("bytes", 0)) for meta in metas)


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _members(uploads: Iterable[Upload], settings: Settings) -> Iterator[archives.Member]:
    """Every candidate image of the upload, archives opened member by member, with the upload-wide limits."""
    limits = archives.Limits(max_members=settings.max_archive_members, max_total_bytes=settings.max_dataset_bytes,
                             max_ratio=settings.max_compression_ratio, max_member_bytes=settings.max_image_bytes)
    total = 0
    for upload in uploads:
        if upload.archive:
            yield from archives.members(upload.file, upload.size, limits)
            continue
        total += upload.size
        if total > settings.max_dataset_bytes:
            raise TooLarge(f"the files add up to more than {settings.max_dataset_bytes} bytes",
                           code="archive_too_large")
        name = archives.display_name(upload.name.replace("\\", "/").rsplit("/", 1)[-1])
        if upload.size > settings.max_image_bytes:
            yield archives.Member(name, reason=f"too large ({upload.size} bytes; the limit is "
                                               f"{settings.max_image_bytes})")
            continue
        upload.file.seek(0)
        yield archives.Member(name, data=upload.file.read(upload.size))


def _ingest(uploads: Iterable[Upload], keep: Callable[[str, bytes], None],
            settings: Settings) -> tuple[list[Entry], list[dict]]:
    """Decode each candidate (one at a time), keep the good ones as `<index>.<ext>` (`keep(file, bytes)`)."""
    entries: list[Entry] = []
    rejected: list[dict] = []
    for member in _members(uploads, settings):
        if member.data is None:
            rejected.append({"name": member.name, "reason": member.reason})
            continue
        try:
            decoded = images.decode(member.data, max_bytes=settings.max_image_bytes,
                                    max_pixels=settings.max_image_pixels)
        except ConvscopeError as exc:
            rejected.append({"name": member.name, "reason": f"not an image convscope reads: {exc.message}"})
            continue
        if len(entries) >= settings.max_dataset_images:
            raise TooLarge(f"the upload holds more than {settings.max_dataset_images} images",
                           code="too_many_images")
        fmt = images.format_of(member.data)
        file = f"{len(entries):05d}.{EXTENSIONS.get(fmt, fmt)}"
        keep(file, member.data)
        entries.append(Entry(index=len(entries), name=member.name, width=decoded.width, height=decoded.height,
                             file=file, sha256=hashlib.sha256(member.data).hexdigest()))
    return entries, rejected
