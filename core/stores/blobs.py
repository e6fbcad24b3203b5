"""Content-addressed blobs read through verified local files, with a bounded cache for a remote storage.

A blob is stored under a key that names its SHA-256 (`models/blobs/<sha256>.onnx`, a dataset image
`datasets/<id>/<sha256>.png`) and is checked against that digest every time it is read:

- local storage: the file itself is hashed; a file that no longer matches is `Unavailable`
  (`blob_corrupt`): there is no other copy to fetch;
- remote storage (a bucket): the blob is copied into `<cache_dir>/<aa>/<sha256><ext>` once, verified,
  and kept; a process that needs a blob another thread or process of this machine is already
  fetching waits for that one download (a lock per digest, and `flock` across processes). A cached
  copy that no longer matches its digest (a disk error, a truncated write, a meddling hand) is
  thrown away and fetched again. The cache keeps at most `max_bytes`, least recently used first;
  a file being read when it is evicted stays readable to its reader (unlink semantics).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from core.errors import Unavailable
from core.stores.storage import Missing, Storage, chunks

log = logging.getLogger("convscope.blobs")


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks (hashlib and reads release the GIL, so other threads go on)."""
    h = hashlib.sha256()
    for block in chunks(path):
        h.update(block)
    return h.hexdigest()


class Blobs:
    """Verified reads of content-addressed blobs from one storage (see the module docstring)."""

    def __init__(self, storage: Storage, cache_dir: Path, max_bytes: int):
        self.storage = storage
        self.cache_dir = Path(cache_dir) / "blob-cache"
        self.max_bytes = max_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0  # downloads from the storage
        self.corrupt = 0  # copies found not to match their digest
        self.evictions = 0

    def file(self, key: str, sha256: str) -> Path:
        """A local file holding exactly the blob `sha256` stored at `key` (`Missing` when there is none)."""
        local = self.storage.local_path(key)
        if local is not None:
            if not local.exists():
                raise Missing(key)
            if file_digest(local) != sha256:
                self.corrupt += 1
                log.error("stored blob does not match its digest", extra={"fields": {"key": key}})
                raise Unavailable(f"the stored file {key} does not match its digest", code="blob_corrupt")
            return local
        return self._cached(key, sha256)

    def read(self, key: str, sha256: str) -> bytes:
        """The blob's bytes, verified."""
        for attempt in (1, 2):
            path = self.file(key, sha256)
            try:
                return path.read_bytes()
            except FileNotFoundError:  # evicted between the check and the read: fetch again once
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def held_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    # The local copy of a remote blob.
    def _cached(self, key: str, sha256: str) -> Path:
        ext = "".join(Path(key).suffixes[-1:])
        path = self.cache_dir / sha256[:2] / f"{sha256}{ext}"
        with self._guard:
            lock = self._locks.setdefault(sha256, threading.Lock())
        with lock, self._flock(sha256):
            if path.exists():
                if file_digest(path) == sha256:
                    os.utime(path)  # most recently used
                    return path
                self.corrupt += 1
                log.warning("cached blob does not match its digest; fetching it again",
                            extra={"fields": {"key": key, "sha256": sha256}})
                path.unlink(missing_ok=True)
            self._fetch(key, sha256, path)
        self._evict(keep=path)
        return path

    def _fetch(self, key: str, sha256: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.close(fd)
        try:
            start = time.perf_counter()
            self.storage.download(key, Path(tmp))
            got = file_digest(Path(tmp))
            if got != sha256:
                self.corrupt += 1
                raise Unavailable(f"the stored blob {key} does not match its digest", code="blob_corrupt")
            os.replace(tmp, path)
            self.fetches += 1
            log.info("blob fetched", extra={"fields": {"key": key, "bytes": path.stat().st_size,
                                                       "s": round(time.perf_counter() - start, 2)}})
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _flock(self, sha256: str):
        locks = self.cache_dir / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return _FileLock(locks / sha256)

    def _entries(self) -> list[tuple[Path, int, float]]:
        found = []
        if not self.cache_dir.is_dir():
            return found
        for sub in self.cache_dir.iterdir():
            if sub.name.startswith(".") or not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((Path(entry.path), st.st_size, st.st_mtime))
        return found

    def _evict(self, keep: Path) -> None:
        entries = sorted(self._entries(), key=lambda e: e[2])
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            self.evictions += 1


class _FileLock:
    """An exclusive `flock` on a small file, so that processes sharing a cache download a blob once."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        return False
