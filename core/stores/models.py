"""The model store: ONNX files named by content hash plus one JSON record per model, on disk.

Layout under `<data_dir>/models/`:  `blobs/<sha256>.onnx`, `records/<id>.json`. Every write goes to a
temporary file in the same folder and is renamed into place, so a half-written file never shows.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

from core.model_record import ModelRecord

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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


class ModelStore:
    """Records and ONNX blobs on disk; ids are validated so no client string becomes a path."""

    def __init__(self, root: Path):
        self.root = Path(root) / "models"
        self.blobs = self.root / "blobs"
        self.records = self.root / "records"
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ModelRecord]] = {}

    def readable(self) -> bool:
        return self.records.is_dir() and os.access(self.records, os.R_OK)

    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            atomic_write(path, data)
        return digest

    def blob_path(self, digest: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("not a sha256 digest")
        return self.blobs / f"{digest}.onnx"

    def put(self, record: ModelRecord) -> None:
        atomic_write(self._record_path(record.id), record.model_dump_json().encode())

    def get(self, model_id: str) -> ModelRecord | None:
        path = self._record_path(model_id) if _ID.match(model_id) else None
        if path is None or not path.exists():
            return None
        mtime = path.stat().st_mtime
        with self._lock:
            hit = self._cache.get(model_id)
            if hit and hit[0] == mtime:
                return hit[1]
        record = ModelRecord.model_validate_json(path.read_bytes())
        with self._lock:
            self._cache[model_id] = (mtime, record)
        return record

    def list(self) -> list[ModelRecord]:
        if not self.records.is_dir():
            return []
        found = (self.get(p.stem) for p in sorted(self.records.glob("*.json")))
        return [r for r in found if r is not None]

    def delete(self, model_id: str) -> None:
        record = self.get(model_id)
        if record is None:
            return
        self._record_path(model_id).unlink(missing_ok=True)
        with self._lock:
            self._cache.pop(model_id, None)
        if not any(r.onnx_sha256 == record.onnx_sha256 for r in self.list()):
            self.blob_path(record.onnx_sha256).unlink(missing_ok=True)

    def _record_path(self, model_id: str) -> Path:
        if not _ID.match(model_id):
            raise ValueError(f"bad model id {model_id!r}")
        return self.records / f"{model_id}.json"
