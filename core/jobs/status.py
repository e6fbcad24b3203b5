"""The states of a job, as the API shows them, the store keeps them and the Lua transition checks them.

    queued ──▶ started ──▶ finished
       │          │  └───▶ failed
       │          └──────▶ canceled      (and started ──▶ queued: a lost worker's job, retried once)
       └─────────────────▶ canceled
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def ended(self) -> bool:
        """True for the three final states; a job never leaves them."""
        return self in ENDED


ENDED = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED})


MEDIA_TYPES = {".npy": "application/x-npy", ".png": "image/png", ".json": "application/json"}


def media_type(name: str) -> str:
    """An artifact's media type from its file name."""
    return next((media for suffix, media in MEDIA_TYPES.items() if name.endswith(suffix)), "application/octet-stream")
