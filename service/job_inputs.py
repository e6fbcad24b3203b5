"""Accepting a job's inputs at submission, by the source its kind declares (`core.kinds.registry.Source`).

Each acceptor checks the input completely now, so that a bad file is a 4xx and never a failed
job, and returns what the job spec keeps (a reference: a content hash, a dataset id) and, where
the worker cannot read the input from elsewhere, the bytes to keep in the job store beside it.
The worker's side of each source is `workers/inputs.py`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core import images
from core.kinds.kind import Source
from core.settings import Settings
from core.stores.datasets import DatasetStore
from core.stores.images import ImageStore
from service.bodies import resolve_image

DECODED_MAX_BYTES = 4 * 1024 * 1024  # images up to this many bytes of RGB pixels (1.4 MP) are handed on decoded


@dataclass(frozen=True)
class Accepted:
    ref: str  # what the job spec keeps, and what makes two jobs' inputs the same
    blob: bytes | None = None  # kept in the job store under `ref` until the worker reads it
    decoded: bytes | None = None  # the image as decoded here (npy, H×W×3 uint8): the worker need not decode it again


@dataclass(frozen=True)
class Submission:
    """What an acceptor may look at: the request's value for the input and its multipart part, if any."""

    name: str
    value: object
    part: bytes | None
    owner: str | None
    settings: Settings
    images: ImageStore


def accept_image(sub: Submission) -> Accepted:
    """An image given once (multipart part, stored id, dataset image or inline base64), decoded now under the usual
    limits; the job keeps the bytes however they were named, so a dataset deleted later does not touch it."""
    data = resolve_image(sub.value, sub.part, sub.images, sub.name, datasets=DatasetStore.open(sub.settings))
    decoded = images.decode(data, max_bytes=sub.settings.max_image_bytes, max_pixels=sub.settings.max_image_pixels)
    pixels = None
    if decoded.width * decoded.height * 3 <= DECODED_MAX_BYTES:
        out = io.BytesIO()
        np.save(out, np.asarray(decoded), allow_pickle=False)
        pixels = out.getvalue()
    return Accepted(hashlib.sha256(data).hexdigest(), data, pixels)


def accept_dataset(sub: Submission) -> Accepted:
    """One of the caller's datasets (404 otherwise); datasets never change, so the id is the content."""
    dataset = DatasetStore.open(sub.settings).get(sub.value, sub.owner)
    return Accepted(dataset.id)


ACCEPTORS: dict[Source, Callable[[Submission], Accepted]] = {
    Source.IMAGE: accept_image,
    Source.DATASET: accept_dataset,
}
