"""Dataset uploads: one archive in part `file`, or many images in parts `files`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.auth import current_owner
from service.context import AppContext, context
from core.stores.datasets import DatasetStore, Upload
from core.errors import BadRequest, TooLarge
from service.schemas import ErrorResponse

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 429, 503)}


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


class DatasetInfo(BaseModel):
    id: str
    count: int
    images: list[DatasetImage]


def dataset_store(ctx: AppContext = Depends(context)) -> DatasetStore:
    return DatasetStore(ctx.settings.data_dir, ctx.settings.dataset_ttl_s)


async def read_form(request: Request, limit: int, max_files: int) -> FormData:
    """The multipart body, refused (413) as soon as it passes `limit` bytes; file parts spool to disk."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise BadRequest("send the dataset as multipart/form-data: an archive in part `file`, or images in parts "
                         "`files`", code="malformed_multipart")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}", code="body_too_large")

    async def limited():
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the body is larger than {limit} bytes", code="body_too_large")
            yield chunk

    try:
        return await MultiPartParser(request.headers, limited(), max_files=max_files, max_fields=4).parse()
    except MultiPartException as exc:
        if "files" in exc.message.lower():
            raise TooLarge(f"too many files: the limit is {max_files}", code="too_many_members") from None
        raise BadRequest(f"the multipart body could not be read: {exc.message[:200]}",
                         code="malformed_multipart") from None


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


@router.post("", status_code=201, response_model=DatasetCreated, responses=ERRORS, openapi_extra={
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {
            "file": {"type": "string", "format": "binary", "description": "a .zip, .tar or .tar.gz (.bz2, .xz)"},
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "images, one part each"}}}}}}})
async def upload_dataset(request: Request, store: DatasetStore = Depends(dataset_store),
                         ctx: AppContext = Depends(context)) -> DatasetCreated:
    """Keep a set of images: every member is re-validated as an image; refused ones are listed in `rejected`."""
    s = ctx.settings
    form = await read_form(request, s.max_dataset_upload_bytes, s.max_archive_members)
    try:
        parts = uploads(form)
        dataset, rejected = await run_in_threadpool(store.create, parts, current_owner.get(), s)
    finally:
        await form.close()
    return DatasetCreated(id=dataset.id, count=dataset.count, rejected=rejected)


@router.get("/{dataset_id}", response_model=DatasetInfo, responses={404: {"model": ErrorResponse}})
def get_dataset(dataset_id: str, store: DatasetStore = Depends(dataset_store)) -> DatasetInfo:
    """The dataset's images: index (as used in job results), name in the upload, size in pixels."""
    return DatasetInfo.model_validate(store.get(dataset_id, current_owner.get()).summary())
