"""Datasets: uploads (one archive in part `file`, or many images in parts `files`), listing, reading, deleting,
and each image of a dataset for its owner (PNG, or a thumbnail)."""

from __future__ import annotations

from contextlib import contextmanager, suppress
from datetime import UTC, datetime

import redis
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile

from core import encoding, images
from core.errors import BadRequest, Overloaded
from core.redis_client import redis_errors
from core.settings import Settings
from core.stores.datasets import DatasetStore, Upload
from service.auth import current_owner
from service.bodies import BodyRules, received
from service.context import AppContext, context
from service.jobs import JobService
from service.openapi_docs import errors, file_part, media_response, multipart_body, text_part
from service.routes.jobs import jobs

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
THUMBNAIL_MIN, THUMBNAIL_MAX = 8, 2048  # pixels, `?size=` of a dataset image


class Rejected(BaseModel):
    name: str = Field(description="the member's path in the archive (or the file name), for display only")
    reason: str


class DatasetCreated(BaseModel):
    id: str
    name: str | None = Field(description="the `name` part, else the uploaded file's name (the archive's; with "
                                         "several images, the first one's and how many more)")
    count: int = Field(description="images kept")
    rejected: list[Rejected] = Field(description="members that are not images convscope reads, or were refused "
                                                 "(absolute paths, `..`, links, devices, too large)")


class DatasetImage(BaseModel):
    index: int
    name: str
    width: int = Field(description="pixels, after EXIF orientation")
    height: int


class DatasetSummary(BaseModel):
    id: str
    name: str | None = Field(description="display name: as given at upload (`name` part, else the file name); "
                                         "null for datasets stored before names were kept")
    count: int = Field(description="images kept")
    created_at: datetime
    expires_at: datetime = Field(description="when the dataset and its files are removed")


class DatasetList(BaseModel):
    datasets: list[DatasetSummary] = Field(description="the caller's datasets, newest first")


class DatasetInfo(DatasetSummary):
    images: list[DatasetImage]
    rejected: list[Rejected] = Field(description="members of the upload that were not kept, as at its creation")


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _times(store: DatasetStore, created_at: float) -> dict:
    return {"created_at": _when(created_at), "expires_at": _when(store.expires_at(created_at))}


def dataset_store(ctx: AppContext = Depends(context)) -> DatasetStore:
    return DatasetStore.open(ctx.settings)


def upload_rules(s: Settings) -> BodyRules:
    """The body of `POST /v1/datasets`: an archive or many images, spooled to disk as they stream in."""
    return BodyRules(max_bytes=s.max_dataset_upload_bytes, max_files=s.max_archive_members, max_fields=4,
                     too_many_files="too_many_members", wrong_media=400,
                     hint="the dataset as multipart/form-data: an archive in part `file`, or images in parts `files`")


def uploads(form: FormData) -> list[Upload]:
    archive = form.getlist("file")
    files = form.getlist("files")
    if any(isinstance(p, UploadFile) for p in form.getlist("name")):
        raise BadRequest("part `name` must be text", code="malformed_multipart")
    if any(not isinstance(p, UploadFile) for p in archive + files):
        raise BadRequest("parts `file` and `files` must be files", code="malformed_multipart")
    if len(archive) > 1 or (archive and files) or not (archive or files):
        raise BadRequest("send one archive in part `file`, or one or more images in parts `files`",
                         code="malformed_multipart")
    return [Upload(name=p.filename or "", file=p.file, size=p.size or 0, archive=p in archive)
            for p in archive + files]


@router.post("", operation_id="uploadDataset", status_code=201, response_model=DatasetCreated,
             responses=errors(400, 413, 415, 422, 429, 503), openapi_extra=multipart_body(
                 file_part("file", "a .zip, .tar or .tar.gz (.bz2, .xz)"),
                 file_part("files", "images, one part each", many=True),
                 text_part("name", "display name (default: the uploaded file's name)")))
async def upload_dataset(request: Request, store: DatasetStore = Depends(dataset_store),
                         ctx: AppContext = Depends(context), service: JobService = Depends(jobs)) -> DatasetCreated:
    """Keep a set of images: every member is re-validated as an image; refused ones are listed in `rejected`.
    One upload per key is stored at a time (429 `upload_in_progress` meanwhile), so that what the key holds is
    checked against its quotas with nothing of its own under way, on every API process."""
    s, owner = ctx.settings, current_owner.get()
    async with received(request, upload_rules(s)) as body:
        name = body.form.get("name")

        def create():
            with one_upload_per_key(service, owner):
                return store.create(uploads(body.form), owner, s, name if isinstance(name, str) else None)
        async with request.app.state.dataset_slots:  # up to 10,000 decodes: a few at once (`create_app`)
            dataset, rejected = await run_in_threadpool(create)
    return DatasetCreated(id=dataset.id, name=dataset.name, count=dataset.count, rejected=rejected)


UPLOAD_LOCK_S = 3600  # the longest a key's upload lock outlives an API process that died while storing


@contextmanager
def one_upload_per_key(service: JobService, owner: str | None):
    """The key's dataset-upload lock in Redis (shared by every API process) while the block runs; 429
    `upload_in_progress` when another upload of the key holds it."""
    lock = service.store.lock(f"datasets:{owner or '_'}", timeout_s=UPLOAD_LOCK_S)
    with redis_errors():
        if not lock.acquire(blocking=False):
            raise Overloaded("this key's previous dataset upload is still being stored; send this one when it is "
                             "done", code="upload_in_progress", retry_after=10)
    try:
        yield
    finally:
        with redis_errors(), suppress(redis.exceptions.LockError):  # expired meanwhile: nothing left to release
            lock.release()


@router.get("", operation_id="listDatasets", response_model=DatasetList)
def list_datasets(store: DatasetStore = Depends(dataset_store)) -> DatasetList:
    """The caller's datasets (not expired), newest first."""
    return DatasetList(datasets=[DatasetSummary(id=d["id"], name=d["name"], count=d["count"],
                                                **_times(store, d["created_at"]))
                                 for d in store.listed(current_owner.get())])


@router.get("/{dataset_id}", operation_id="getDataset", response_model=DatasetInfo, responses=errors(404))
def get_dataset(dataset_id: str, store: DatasetStore = Depends(dataset_store)) -> DatasetInfo:
    """The dataset's images: index (as used in job results), name in the upload, size in pixels; and the
    members of the upload that were refused."""
    dataset = store.get(dataset_id, current_owner.get())
    return DatasetInfo.model_validate(dataset.summary() | _times(store, dataset.created_at))


@router.get("/{dataset_id}/images/{index}", operation_id="getDatasetImage", response_class=Response,
            responses={**media_response("image/png"), **errors(404, 422)})
def get_dataset_image(dataset_id: str, request: Request,
                      index: int = Path(ge=0, description="the image's `index` in the dataset"),
                      size: int | None = Query(None, ge=THUMBNAIL_MIN, le=THUMBNAIL_MAX,
                                               description="longest side of a thumbnail, pixels (never enlarged); "
                                                           "omitted: the image at its own size"),
                      store: DatasetStore = Depends(dataset_store), ctx: AppContext = Depends(context)) -> Response:
    """One of the caller's dataset images as PNG (decoded, orientation applied, RGB), as jobs read it: the image
    that `{"dataset": id, "index": n}` names and that job results (`image_index`) point to. 404
    `dataset_image_not_found` for an index past the last image."""
    s = ctx.settings
    _, data = store.get(dataset_id, current_owner.get()).image(index)
    with request.app.state.preview_slots:  # a decode and an encode, as an image preview: a few at once per process
        decoded = images.decode(data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
        if size is not None and max(decoded.size) > size:
            decoded.thumbnail((size, size), Image.Resampling.LANCZOS)
        png = encoding.png(decoded)
    # A dataset never changes (a new upload is a new id), so the browser may keep what it read, for its owner only.
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/{dataset_id}", operation_id="deleteDataset", status_code=204, response_class=Response,
               responses=errors(404))
def delete_dataset(dataset_id: str, store: DatasetStore = Depends(dataset_store)) -> Response:
    """Delete one of the caller's datasets and its files. Jobs still reading it fail with `dataset_not_found`;
    results of jobs that have finished stay."""
    store.delete(dataset_id, current_owner.get())
    return Response(status_code=204)
