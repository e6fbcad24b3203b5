"""Datasets: uploads (one archive in part `file`, or many images in parts `files`), listing, reading, deleting."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile

from core.errors import BadRequest
from core.settings import Settings
from core.stores.datasets import DatasetStore, Upload
from service.auth import current_owner
from service.bodies import BodyRules, received
from service.context import AppContext, context
from service.openapi_docs import errors, file_part, multipart_body

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


class Rejected(BaseModel):
    name: str = Field(description="the member's path in the archive (or the file name), for display only")
    reason: str


class DatasetCreated(BaseModel):
    id: str
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
                 file_part("files", "images, one part each", many=True)))
async def upload_dataset(request: Request, store: DatasetStore = Depends(dataset_store),
                         ctx: AppContext = Depends(context)) -> DatasetCreated:
    """Keep a set of images: every member is re-validated as an image; refused ones are listed in `rejected`."""
    s = ctx.settings
    async with received(request, upload_rules(s)) as body:
        dataset, rejected = await run_in_threadpool(store.create, uploads(body.form), current_owner.get(), s)
    return DatasetCreated(id=dataset.id, count=dataset.count, rejected=rejected)


@router.get("", operation_id="listDatasets", response_model=DatasetList)
def list_datasets(store: DatasetStore = Depends(dataset_store)) -> DatasetList:
    """The caller's datasets (not expired), newest first."""
    return DatasetList(datasets=[DatasetSummary(id=d["id"], count=d["count"], **_times(store, d["created_at"]))
                                 for d in store.listed(current_owner.get())])


@router.get("/{dataset_id}", operation_id="getDataset", response_model=DatasetInfo, responses=errors(404))
def get_dataset(dataset_id: str, store: DatasetStore = Depends(dataset_store)) -> DatasetInfo:
    """The dataset's images: index (as used in job results), name in the upload, size in pixels; and the
    members of the upload that were refused."""
    dataset = store.get(dataset_id, current_owner.get())
    return DatasetInfo.model_validate(dataset.summary() | _times(store, dataset.created_at))


@router.delete("/{dataset_id}", operation_id="deleteDataset", status_code=204, response_class=Response,
               responses=errors(404))
def delete_dataset(dataset_id: str, store: DatasetStore = Depends(dataset_store)) -> Response:
    """Delete one of the caller's datasets and its files. Jobs still reading it fail with `dataset_not_found`;
    results of jobs that have finished stay."""
    store.delete(dataset_id, current_owner.get())
    return Response(status_code=204)
