"""Image uploads: stored in Redis by content id."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from core import images, render
from service.auth import current_owner
from service.context import AppContext, context
from core.errors import BadRequest
from service.schemas import ErrorResponse, ImageInfo

router = APIRouter(prefix="/v1/images", tags=["images"])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 503)}


@router.post("", status_code=201, response_model=ImageInfo, responses=ERRORS, openapi_extra={
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}})
async def upload_image(request: Request, ctx: AppContext = Depends(context)) -> ImageInfo:
    """Keep an image (multipart part `file`); the id is derived from its bytes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise BadRequest("send the image as multipart/form-data in part `file`", code="malformed_multipart")
    try:
        form = await request.form(max_files=1, max_fields=1)
    except Exception as exc:
        raise BadRequest(f"the multipart body could not be read: {str(exc)[:200]}", code="malformed_multipart") from None
    part = form.get("file")
    if part is None or isinstance(part, str):
        raise BadRequest("the multipart body has no file part `file`", code="malformed_multipart")
    data = await part.read()
    s = ctx.settings
    owner = current_owner.get()

    def work() -> ImageInfo:
        decoded = images.decode(data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
        image_id = images.image_id(data)
        ctx.images.put(owner, image_id, data)
        return ImageInfo(id=image_id, width=decoded.width, height=decoded.height, format=images.format_of(data))

    return await run_in_threadpool(work)


@router.get("/{image_id}", response_class=Response, responses={
    200: {"content": {"image/png": {}}}, 404: {"model": ErrorResponse}})
def get_image(image_id: str, ctx: AppContext = Depends(context)) -> Response:
    """The stored image as PNG (decoded, orientation applied, RGB)."""
    s = ctx.settings
    decoded = images.decode(ctx.images.get(current_owner.get(), image_id), max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
    return Response(render.png(decoded), media_type="image/png")

