"""Datasets: sets of images uploaded together, kept on disk under names the service makes up.

Layout under `<data_dir>/datasets/<id>/` (shared by the API and the workers, like the model store):
`00000.<ext>` … one file per accepted image (the uploaded bytes, re-validated by
`core.images.decode`), `manifest.json` (names, sizes, rejected members) and `meta.json` (owner,
creation time, count: small, so quota, listing and expiry scans stay cheap). A dataset is assembled
in a hidden `.tmp-*` folder and renamed into place whole, so readers see all of it or nothing; a
deleted one is renamed out of place whole (to a `.tmp-*` name) before its files go, so it is 404 at
once, and a job still reading it fails with `dataset_not_found` at its next image.

A dataset belongs to the key that uploaded it; any other key gets 404. Expired datasets
(`dataset_ttl_s`) are 404 too and are swept away by later uploads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core import images
from core.errors import ConvscopeError, Invalid, NotFound, Overloaded, TooLarge
from core.settings import Settings
from core.stores import archives

log = logging.getLogger("convscope.datasets")
_ID = re.compile(r"^[0-9a-f]{32}$")
EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg", "tiff": "tif"}
STALE_TMP_S = 3600  # a `.tmp-*` folder this old was left by a crashed upload


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


@dataclass(frozen=True)
class Dataset:
    """A stored dataset as workers and routes see it."""

    id: str
    root: Path
    owner: str | None
    created_at: float
    entries: list[Entry]
    rejected: list[dict]

    @property
    def count(self) -> int:
        return len(self.entries)

    def read(self, index: int) -> bytes:
        """The stored bytes of image `index`."""
        return (self.root / self.entries[index].file).read_bytes()

    def summary(self) -> dict:
        """`GET /v1/datasets/{id}` (less the times, which the store knows)."""
        return {"id": self.id, "count": self.count, "images": [
            {"index": e.index, "name": e.name, "width": e.width, "height": e.height} for e in self.entries],
            "rejected": self.rejected}


class DatasetStore:
    """Datasets on disk; ids are validated so no client string becomes a path."""

    def __init__(self, data_dir: Path, ttl_s: int):
        self.root = Path(data_dir) / "datasets"
        self.ttl_s = ttl_s

    def path(self, dataset_id: str) -> Path | None:
        return self.root / dataset_id if _ID.match(dataset_id or "") else None

    def get(self, dataset_id: str, owner: str | None) -> Dataset:
        """The dataset `dataset_id` if `owner` uploaded it and it has not expired; else 404."""
        folder = self.path(dataset_id)
        try:
            meta = json.loads((folder / "meta.json").read_bytes()) if folder else None
        except (OSError, ValueError):
            meta = None
        if meta is None or meta.get("owner") != owner or self._expired(meta):
            raise NotFound(f"no dataset with id {dataset_id!r} (it may have expired or been deleted)",
                           code="dataset_not_found")
        manifest = json.loads((folder / "manifest.json").read_bytes())
        return Dataset(id=dataset_id, root=folder, owner=owner, created_at=meta["created_at"],
                       entries=[Entry(**e) for e in manifest["images"]], rejected=manifest["rejected"])

    def _expired(self, meta: dict) -> bool:
        return time.time() > float(meta.get("created_at", 0)) + self.ttl_s

    def expires_at(self, created_at: float) -> float:
        """When a dataset created at `created_at` expires (Unix seconds)."""
        return created_at + self.ttl_s

    def listed(self, owner: str | None) -> list[dict]:
        """`owner`'s live datasets from their small `meta.json` files, newest first: {id, count, created_at}."""
        metas = [m for m in self._metas() if m.get("owner") == owner and not self._expired(m)]
        return [{"id": m["id"], "count": int(m.get("count", 0)), "created_at": float(m["created_at"])}
                for m in sorted(metas, key=lambda m: (-float(m["created_at"]), m["id"]))]

    def delete(self, dataset_id: str, owner: str | None) -> None:
        """Remove `owner`'s dataset `dataset_id` and its files (404 when there is none for `owner`)."""
        dataset = self.get(dataset_id, owner)
        doomed = self.root / f".tmp-deleted-{dataset.id}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(dataset.root, doomed)  # atomic: gone for every reader from here on
        except FileNotFoundError:  # deleted meanwhile by another request
            raise NotFound(f"no dataset with id {dataset_id!r} (it may have expired or been deleted)",
                           code="dataset_not_found") from None
        shutil.rmtree(doomed, ignore_errors=True)  # a crash here leaves a `.tmp-*` folder that `sweep` removes
        log.info("dataset deleted", extra={"fields": {"dataset": dataset.id, "images": dataset.count}})

    def held_by(self, owner: str | None) -> int:
        """How many live datasets `owner` holds."""
        return sum(1 for meta in self._metas() if meta.get("owner") == owner and not self._expired(meta))

    def _metas(self) -> Iterator[dict]:
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if _ID.match(folder.name):
                try:
                    yield json.loads((folder / "meta.json").read_bytes()) | {"id": folder.name}
                except (OSError, ValueError):
                    continue

    def sweep(self) -> int:
        """Delete expired datasets and stale half-written folders; returns how many went."""
        gone = 0
        for meta in list(self._metas()):
            if self._expired(meta):
                shutil.rmtree(self.root / meta["id"], ignore_errors=True)
                gone += 1
        if self.root.is_dir():
            for folder in self.root.glob(".tmp-*"):
                try:
                    if time.time() - folder.stat().st_mtime > STALE_TMP_S:
                        shutil.rmtree(folder, ignore_errors=True)
                except OSError:
                    continue
        return gone

    def create(self, uploads: Iterable[Upload], owner: str | None, settings: Settings) -> tuple[Dataset, list[dict]]:
        """Validate every image of the upload, keep the accepted ones; returns (dataset, rejected)."""
        self.sweep()
        if self.held_by(owner) >= settings.max_datasets_per_key:
            raise Overloaded(f"this key already holds {settings.max_datasets_per_key} datasets; delete one or wait for "
                             f"some to expire", code="dataset_quota", retry_after=3600)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        try:
            entries, rejected = _ingest(uploads, staging, settings)
            if not entries:
                raise Invalid("the upload holds no image convscope can read", code="empty_dataset",
                              details={"rejected": rejected[:100]})
            dataset_id = uuid.uuid4().hex
            now = time.time()
            _write_json(staging / "manifest.json", {"images": [e.__dict__ for e in entries], "rejected": rejected})
            _write_json(staging / "meta.json", {"owner": owner, "created_at": now, "count": len(entries)})
            os.replace(staging, self.root / dataset_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("dataset stored", extra={"fields": {"dataset": dataset_id, "images": len(entries),
                                                     "rejected": len(rejected)}})
        return Dataset(dataset_id, self.root / dataset_id, owner, now, entries, rejected), rejected


def _write_json(path: Path, value: dict) -> None:
    with open(path, "w") as f:
        json.dump(value, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())


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


def _ingest(uploads: Iterable[Upload], folder: Path, settings: Settings) -> tuple[list[Entry], list[dict]]:
    """Decode each candidate (one at a time), store the good ones as `<index>.<ext>` in `folder`."""
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
        (folder / file).write_bytes(member.data)
        entries.append(Entry(index=len(entries), name=member.name, width=decoded.width, height=decoded.height,
                             file=file))
    return entries, rejected
