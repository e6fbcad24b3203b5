"""Reading request bodies: JSON or multipart (`image`, `style_image` parts + a `spec` JSON part).

Every way a body can be wrong ends as a `ConvscopeError`: unparseable JSON (including nesting
that makes the parser recurse too deep, or integers too long to convert) is 400; values that
parse but do not validate are 422 with pydantic's error list; other media types are 415.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from core.errors import BadRequest, Invalid, TooLarge, UnsupportedMedia
from service.schemas import ImageByData, ImageById, ImageRef
from core.stores.images import ImageStore
from service.auth import current_owner

M = TypeVar("M", bound=BaseModel)
FILE_PARTS = ("image", "style_image")


def parse_json(raw: bytes | str) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:200]}", code="malformed_json") from None


def validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise Invalid(f"invalid request: {errors[0]['msg']} at {'.'.join(map(str, errors[0]['loc'])) or 'body'}",
                      code="validation_error", details=errors) from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply", code="malformed_json") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_request(request: Request, model: type[M], limit: int) -> tuple[M, dict[str, bytes]]:
    """Parse the spec and collect file parts; returns (spec, {part name: bytes})."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await _read_multipart(request, model, limit)
    if media not in ("application/json", ""):
        raise UnsupportedMedia(f"send application/json or multipart/form-data, not {media}", code="unsupported_media_type")
    raw = await read_body(request, limit)
    return validate(model, parse_json(raw or b"{}")), {}


async def _read_multipart(request: Request, model: type[M], limit: int) -> tuple[M, dict[str, bytes]]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}", code="body_too_large")
    try:
        form = await request.form(max_files=4, max_fields=16, max_part_size=1024 * 1024)
    except Exception as exc:  # starlette raises several types for broken multipart bodies
        raise BadRequest(f"the multipart body could not be read: {str(exc)[:200]}", code="malformed_multipart") from None
    files: dict[str, bytes] = {}
    spec: object = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in FILE_PARTS:
                raise BadRequest(f"unexpected file part {key!r}; use {', '.join(FILE_PARTS)}", code="malformed_multipart")
            files[key] = await value.read()
        elif key == "spec":
            spec = parse_json(value)
        else:
            raise BadRequest(f"unexpected form field {key!r}; put parameters in the `spec` part", code="malformed_multipart")
    return validate(model, spec), files


def resolve_image(ref: ImageRef | None, part: bytes | None, images: ImageStore, name: str = "image") -> bytes:
    """The bytes of an image given as id, inline base64 or multipart part (exactly one)."""
    if (ref is None) == (part is None):
        raise Invalid(f"give the {name} exactly once: as {{\"id\"}}, {{\"data\"}} or a multipart part `{name}`",
                      code="image_required")
    if part is not None:
        return part
    if isinstance(ref, ImageById):
        return images.get(current_owner.get(), ref.id)
    assert isinstance(ref, ImageByData)
    try:
        return base64.b64decode(ref.data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{name}.data is not valid base64", code="bad_base64") from None
