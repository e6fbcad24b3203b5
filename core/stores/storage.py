"""Where models and datasets live: one interface over a local folder or an S3-compatible bucket, by URL.

    open_storage(settings)
      storage_url ''                 → LocalStorage(data_dir): files under the data folder (the default)
      storage_url /srv/x, file:///x  → LocalStorage(that folder)
      storage_url s3://bucket/prefix → BucketStorage: objects in that bucket (fsspec + s3fs), endpoint and
                                       credentials from settings (MinIO, Ceph, R2, AWS)

Keys are relative paths with `/` (`models/blobs/<sha256>.onnx`, `datasets/<id>/meta.json`); no client
string ever becomes a key without its store validating it first. Every write is whole and atomic (a
local file is written to a temporary name and renamed; an object PUT is atomic by nature), so a reader
sees all of a file or nothing. A storage that cannot be reached raises `Unavailable`
(`storage_unavailable`, 503 to clients), retried by nobody here: the next request simply tries again,
so the API and the workers recover by themselves when the bucket is back.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from core.errors import Unavailable
from core.settings import Settings

log = logging.getLogger("convscope.storage")
CHUNK = 8 * 1024 * 1024


class Missing(KeyError):
    """No object at that key."""


class Storage(Protocol):
    url: str
    remote: bool  # True: blobs read from here are copied into the local blob cache first

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def download(self, key: str, path: Path) -> None: ...
    def version(self, key: str) -> str | None: ...
    def listed(self, prefix: str) -> dict[str, str]: ...
    def children(self, prefix: str) -> list[str]: ...
    def modified(self, prefix: str) -> float | None: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...
    def readable(self) -> str | None: ...


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStorage:
    """Files under one folder; the folder may be shared (NFS, a volume) or private to one machine."""

    remote = False

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        atomic_write(self._path(key), data)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise Missing(key) from None

    def download(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise Missing(key) from None

    def version(self, key: str) -> str | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return f"{st.st_mtime_ns}-{st.st_size}"

    def listed(self, prefix: str) -> dict[str, str]:
        """key → version of every file directly under folder `prefix` (hidden temporary files left out)."""
        folder = self._path(prefix)
        found = {}
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            found[f"{prefix.rstrip('/')}/{entry.name}"] = f"{st.st_mtime_ns}-{st.st_size}"
        return found

    def children(self, prefix: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self._path(prefix)) if not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def modified(self, prefix: str) -> float | None:
        """When the file or folder `prefix` last changed (Unix seconds; None when there is none)."""
        try:
            return self._path(prefix).stat().st_mtime
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        folder = self._path(prefix)
        doomed = folder.with_name(f".tmp-deleted-{folder.name}-{os.getpid()}")
        try:
            os.replace(folder, doomed)  # gone for every reader at once; a crash leaves a `.tmp-*` to sweep
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def readable(self) -> str | None:
        """None when the storage can be read, else the reason."""
        return None if os.access(self.root, os.R_OK) or not self.root.exists() else f"{self.root} is not readable"


class BucketStorage:
    """Objects in an S3-compatible bucket under a prefix, through fsspec's s3fs (listings never cached, so
    every machine sees every other machine's writes at once)."""

    remote = True

    def __init__(self, url: str, settings: Settings):
        import s3fs  # only when a bucket is configured

        self.url = url
        self.base = url.removeprefix("s3://").strip("/")
        options = {"connect_timeout": settings.storage_timeout_s, "read_timeout": max(30.0, settings.storage_timeout_s),
                   "retries": {"max_attempts": 2, "mode": "standard"}}
        secret = settings.s3_secret_access_key.get_secret_value()
        self.fs = s3fs.S3FileSystem(
            key=settings.s3_access_key_id or None, secret=secret or None, skip_instance_cache=True,
            use_listings_cache=False, endpoint_url=settings.s3_endpoint_url or None, config_kwargs=options,
            client_kwargs={"region_name": settings.s3_region})

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def _key(self, path: str) -> str:
        return path.removeprefix(self.base + "/")

    def put(self, key: str, data: bytes) -> None:
        with _unreachable(self.url):
            self.fs.pipe_file(self._path(key), data)

    def get(self, key: str) -> bytes:
        with _unreachable(self.url):
            try:
                return self.fs.cat_file(self._path(key))
            except FileNotFoundError:
                raise Missing(key) from None

    def download(self, key: str, path: Path) -> None:
        with _unreachable(self.url):
            try:
                self.fs.get_file(self._path(key), str(path))
            except FileNotFoundError:
                raise Missing(key) from None

    def version(self, key: str) -> str | None:
        with _unreachable(self.url):
            try:
                info = self.fs.info(self._path(key))
            except FileNotFoundError:
                return None
        return str(info.get("ETag") or info.get("LastModified") or info.get("size"))

    def listed(self, prefix: str) -> dict[str, str]:
        with _unreachable(self.url):
            try:
                found = self.fs.ls(self._path(prefix.rstrip("/")), detail=True, refresh=True)
            except FileNotFoundError:
                return {}
        return {self._key(i["name"]): str(i.get("ETag") or i.get("size")) for i in found if i.get("type") == "file"}

    def children(self, prefix: str) -> list[str]:
        with _unreachable(self.url):
            try:
                found = self.fs.ls(self._path(prefix.rstrip("/")), detail=False, refresh=True)
            except FileNotFoundError:
                return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found)

    def modified(self, prefix: str) -> float | None:
        """When the newest object under `prefix` was written (Unix seconds; None when there is none)."""
        with _unreachable(self.url):
            try:
                found = self.fs.find(self._path(prefix.rstrip("/")), detail=True)
            except FileNotFoundError:
                return None
        times = [info["LastModified"].timestamp() for info in found.values() if info.get("LastModified")]
        return max(times) if times else None

    def delete(self, key: str) -> None:
        with _unreachable(self.url):
            try:
                self.fs.rm_file(self._path(key))
            except FileNotFoundError:
                pass

    def delete_prefix(self, prefix: str) -> None:
        with _unreachable(self.url):
            try:
                self.fs.rm(self._path(prefix.rstrip("/")), recursive=True)
            except FileNotFoundError:
                pass

    def local_path(self, key: str) -> Path | None:
        return None

    def readable(self) -> str | None:
        try:
            with _unreachable(self.url):
                self.fs.ls(self.base.split("/", 1)[0], detail=False, refresh=True)
        except Unavailable as exc:
            return exc.message
        except FileNotFoundError:
            return f"bucket of {self.url} does not exist"
        return None


class _unreachable:
    """Turns a storage that cannot be reached (or refuses us) into `Unavailable`; a missing key passes through."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (FileNotFoundError, Missing, Unavailable)):
            return False
        if isinstance(exc, Exception):
            log.warning("storage unavailable", extra={"fields": {"url": self.url, "error": exc.__class__.__name__}})
            raise Unavailable(f"the storage {self.url} cannot be reached ({exc.__class__.__name__}); retry shortly",
                              code="storage_unavailable") from None
        return False


def open_storage(settings: Settings) -> Storage:
    """The storage named by `storage_url` (the data folder when it is empty)."""
    url = settings.storage_url.strip()
    if not url:
        return LocalStorage(settings.data_dir)
    if url.startswith("s3://"):
        return BucketStorage(url, settings)
    if url.startswith("file://"):
        return LocalStorage(Path(url.removeprefix("file://")))
    if "://" in url:
        raise ValueError(f"storage_url {url!r}: only a folder, file:// or s3:// are supported")
    return LocalStorage(Path(url))


def chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield block
