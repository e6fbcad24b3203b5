"""Image uploads: stored in Redis by content id."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from core import encoding, images
from core.errors import BadRequest
from core.settings import Settings
from service.auth import current_owner
from service.bodies import FORM_SLACK, BodyRules, received
from service.context import AppContext, context
from service.openapi_docs import errors, file_part, media_response, multipart_body
from service.schemas import ImageInfo

router = APIRouter(prefix="/v1/images", tags=["images"])


def upload_rules(s: Settings) -> BodyRules:
    """The body of `POST /v1/images`: one file of at most `max_image_bytes`, plus multipart framing."""
    return BodyRules(max_bytes=s.max_image_bytes + FORM_SLACK, max_files=1, max_fields=1, wrong_media=400,
                     hint="the image as multipart/form-data in part `file`")


@router.post("", operation_id="uploadImage", status_code=201, response_model=ImageInfo,
             responses=errors(400, 413, 415, 429, 503), openapi_extra=multipart_body(file_part("file", required=True)))
async def upload_image(request: Request, ctx: AppContext = Depends(context)) -> ImageInfo:
    """Keep an image (multipart part `file`); the id is derived from its bytes. The key's images count against its
    `quota_image_bytes` (429 `quota_exceeded` past it; `GET /v1/usage`)."""
    s = ctx.settings
    async with received(request, upload_rules(s)) as body:
        part = body.form.get("file")
        if not isinstance(part, UploadFile):
            raise BadRequest("the multipart body has no file part `file`", code="malformed_multipart")
        data = await part.read()
    owner = current_owner.get()

    def work() -> ImageInfo:
        decoded = images.decode(data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
        image_id = images.image_id(data)
        ctx.images.put(owner, image_id, data)
        return ImageInfo(id=image_id, width=decoded.width, height=decoded.height, format=images.format_of(data))

    return await run_in_threadpool(work)


@router.get("/{image_id}", operation_id="getImage", response_class=Response,
            responses={**media_response("image/png"), **errors(404)})
def get_image(image_id: str, request: Request, ctx: AppContext = Depends(context)) -> Response:
    """The stored image as PNG (decoded, orientation applied, RGB): made once, then kept as long as the image."""
    s = ctx.settings

    def make(data: bytes) -> bytes:  # up to 40 MP decoded and encoded: a few at once per process (a thread each)
        with request.app.state.preview_slots:  # made by `create_app`: `max_concurrent_previews`
            decoded = images.decode(data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
            return encoding.png(decoded)

    return Response(ctx.images.preview(current_owner.get(), image_id, make), media_type="image/png")
