"""Loading a job's inputs in the worker, by the source its kind declares (`core.kinds.registry.Source`).

The API's side of each source is `service/job_inputs.py`: it checked the input and kept a
reference in the job spec (and, for images, the file in the job store). Here that reference
becomes what the method receives: an image through the one image pipeline (`core.images`), a
dataset as an activation feed on ONNX Runtime (`workers/dataset_feed.py`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core import images
from core.errors import NotFound
from core.kinds.kind import Source
from core.methods import ImageInput, Progress
from core.model_record import ModelRecord
from core.stores.datasets import Dataset, DatasetStore
from workers import dataset_feed
from workers.context import WorkerContext


@dataclass(frozen=True)
class Loading:
    """One input to load: its name and reference in the spec, the job's model, owner and progress."""

    name: str
    ref: str
    record: ModelRecord
    owner: str | None
    progress: Progress
    opened: object | None = None  # what the plan already opened for it (a dataset), else None


def load_image(ctx: WorkerContext, item: Loading) -> ImageInput:
    """The image kept at submission, decoded, fitted and normalised (404 `input_expired` once it expired); the
    pixels the API decoded at submission when they are still kept, so the file is not decoded twice."""
    decoded = ctx.store.files.get_decoded(item.ref)
    if decoded is not None:
        try:
            pixels = np.load(io.BytesIO(decoded), allow_pickle=False)
        except ValueError:  # not what the API writes: decode the file instead
            pixels = None
        if pixels is not None and pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
            return images.prepare_pixels(pixels, item.record, max_resized_pixels=ctx.settings.max_resized_pixels)
    data = ctx.store.files.get_input(item.ref)
    if data is None:
        raise NotFound(f"the job's {item.name.replace('_', ' ')} has expired", code="input_expired")
    return images.prepare(data, item.record, max_bytes=ctx.settings.max_image_bytes,
                          max_pixels=ctx.settings.max_image_pixels, max_resized_pixels=ctx.settings.max_resized_pixels)


def load_dataset(ctx: WorkerContext, item: Loading) -> dataset_feed.Feed:
    """The caller's dataset as batches of activations on ONNX Runtime (opened by the plan, or now; 404 once gone)."""
    dataset = item.opened or open_dataset(ctx, item.ref, item.owner)
    return dataset_feed.open_feed(ctx.settings, ctx.models, item.record, dataset, item.progress)


def open_dataset(ctx: WorkerContext, ref: str, owner: str | None) -> Dataset:
    """The caller's dataset `ref` (404 `dataset_not_found` once it is gone): its image count is part of a
    dataset job's step count, so the runner opens it once, before the claim."""
    return DatasetStore.open(ctx.settings).get(ref, owner)


LOADERS: dict[Source, Callable[[WorkerContext, Loading], object]] = {
    Source.IMAGE: load_image,
    Source.DATASET: load_dataset,
}
