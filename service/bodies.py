"""Reading request bodies: one size-limited way in for every route, JSON or multipart.

`received(request, rules)` checks the media type, refuses a declared `Content-Length` over the
limit, counts the body as it streams in (413 the moment it passes the limit, before the rest is
read) and parses multipart with starlette's `MultiPartParser` under the route's part limits
(file parts spool to disk). Every way a body can be wrong ends as a `ConvscopeError`:

    another media type        415 unsupported_media_type (upload routes: 400 malformed_multipart)
    over the byte limit       413 body_too_large (or the route's own code, e.g. model_too_large)
    too many file parts       400 malformed_multipart (or the route's 413 code, e.g. too_many_members)
    broken multipart          400 malformed_multipart
    JSON that does not parse  400 malformed_json (also nesting too deep, integers too long to convert)
    values that do not fit    422 validation_error with pydantic's error list

`read_request` builds on it for the views and jobs: a JSON body, or multipart with `image` and
`style_image` file parts and the rest of the body as a JSON string in part `spec`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from core.errors import BadRequest, ConvscopeError, Invalid, TooLarge, UnsupportedMedia
from core.kinds.kind import Source
from core.kinds.registry import KINDS
from core.stores.datasets import DatasetStore
from core.stores.images import ImageStore
from service.auth import current_owner
from service.schemas import ImageByData, ImageById, ImageInDataset, ImageRef

M = TypeVar("M", bound=BaseModel)
JSON, MULTIPART = "application/json", "multipart/form-data"
# Multipart file parts: every input that comes as an image file, by the kind registry (`image`, `style_image`).
FILE_PARTS = tuple(sorted({read.name for kind in KINDS.values() for read in kind.reads if read.source is Source.IMAGE}))
FORM_SLACK = 1024 * 1024  # bytes of multipart framing and text parts allowed on top of a file's own limit
OFF_LOOP_BYTES = 8 * 1024 * 1024  # multipart bodies declared larger than this are parsed in a worker thread
OFF_LOOP_JSON_BYTES = 256 * 1024  # JSON bodies larger than this (an inline base64 image) are parsed in one too


@dataclass(frozen=True)
class BodyRules:
    """What one route accepts as its body, and how it refuses the rest."""

    max_bytes: int  # the whole body as sent (multipart framing included)
    hint: str  # what to send, e.g. "the image as multipart/form-data in part `file`"
    media: tuple[str, ...] = (MULTIPART,)  # with JSON among them, a body without a Content-Type is JSON
    wrong_media: Literal[400, 415] = 415  # 400 malformed_multipart where uploads have always answered so
    too_large: str = "body_too_large"  # the code of the 413 past `max_bytes`
    too_large_message: str | None = None  # default: "the body is over the limit of N bytes"
    max_files: int = 4  # file parts
    max_fields: int = 16  # text parts
    max_part_size: int = 1024 * 1024  # bytes of one text part
    too_many_files: str | None = None  # the code of a 413 for too many file parts; None: 400 malformed_multipart


@dataclass
class Body:
    """A received body: the raw bytes of a JSON body, or the parsed multipart form."""

    media: str
    raw: bytes = b""
    form: FormData = field(default_factory=FormData)


@asynccontextmanager
async def received(request: Request, rules: BodyRules) -> AsyncIterator[Body]:
    """The body under `rules`; a multipart form's spooled files are closed on leaving the block."""
    media = _media_type(request, rules)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > rules.max_bytes:
        raise _too_large(rules)
    stream = _limited(request, rules)
    if media != MULTIPART:
        yield Body(media, raw=b"".join([chunk async for chunk in stream]))
        return
    form = await _parse_multipart(request, stream, rules)
    try:
        yield Body(media, form=form)
    finally:
        await form.close()


def _media_type(request: Request, rules: BodyRules) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media and JSON in rules.media:
        return JSON
    if media in rules.media:
        return media
    message = f"send {rules.hint}, not {media or 'a body without a Content-Type'}"
    if rules.wrong_media == 400:
        raise BadRequest(message, code="malformed_multipart")
    raise UnsupportedMedia(message, code="unsupported_media_type")


async def _limited(request: Request, rules: BodyRules) -> AsyncIterator[bytes]:
    """The body's chunks, refused (413) as soon as their sum passes `rules.max_bytes`."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > rules.max_bytes:
            raise _too_large(rules)
        yield chunk


def _too_large(rules: BodyRules) -> TooLarge:
    message = rules.too_large_message or f"the body is over the limit of {rules.max_bytes} bytes"
    return TooLarge(message, code=rules.too_large)


async def _parse_multipart(request: Request, stream: AsyncIterator[bytes], rules: BodyRules) -> FormData:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > OFF_LOOP_BYTES:
        return await _parse_multipart_off_loop(request, stream, rules)
    return await _parse(request.headers, stream, rules)


async def _parse_multipart_off_loop(request: Request, stream: AsyncIterator[bytes], rules: BodyRules) -> FormData:
    """A large body (a model, a dataset) is only counted and appended to a temporary file on the event loop, then
    parsed in a worker thread: parsing hundreds of MB of multipart on the loop would keep every other request
    (`/healthz` included) waiting for the loop for tenths of a second at a time."""
    spool = tempfile.TemporaryFile()
    try:
        async for chunk in stream:
            spool.write(chunk)  # into the page cache: microseconds per chunk
        spool.seek(0)
        return await run_in_threadpool(lambda: asyncio.run(_parse(request.headers, _chunks_of(spool), rules)))
    finally:
        spool.close()


async def _chunks_of(file) -> AsyncIterator[bytes]:
    while chunk := file.read(1024 * 1024):
        yield chunk


async def _parse(headers, stream: AsyncIterator[bytes], rules: BodyRules) -> FormData:
    parser = MultiPartParser(headers, stream, max_files=rules.max_files, max_fields=rules.max_fields,
                             max_part_size=rules.max_part_size)
    try:
        return await parser.parse()  # closes what it spooled when it fails, our own 413 included
    except ConvscopeError:
        raise
    except MultiPartException as exc:
        if rules.too_many_files and exc.message.startswith("Too many files"):
            raise TooLarge(f"too many files: the limit is {rules.max_files}", code=rules.too_many_files) from None
        raise BadRequest(f"the multipart body could not be read: {exc.message[:200]}",
                         code="malformed_multipart") from None
    except Exception as exc:  # python-multipart's own errors for framing it cannot follow; never a 500
        raise BadRequest(f"the multipart body could not be read: {str(exc)[:200]}",
                         code="malformed_multipart") from None


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


async def read_request(request: Request, model: type[M], limit: int) -> tuple[M, dict[str, bytes]]:
    """Parse the spec (JSON body, or multipart part `spec`) and collect file parts: (spec, {part: bytes})."""
    rules = BodyRules(max_bytes=limit, hint="application/json or multipart/form-data", media=(JSON, MULTIPART))
    async with received(request, rules) as body:
        if body.media == JSON and len(body.raw) > OFF_LOOP_JSON_BYTES:  # tens of ms or more: not on the loop
            return await run_in_threadpool(lambda: validate(model, parse_json(body.raw))), {}
        if body.media == JSON:
            return validate(model, parse_json(body.raw or b"{}")), {}
        return await _spec_and_files(body.form, model)


async def _spec_and_files(form: FormData, model: type[M]) -> tuple[M, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    spec: object = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in FILE_PARTS:
                raise BadRequest(f"unexpected file part {key!r}; use {', '.join(FILE_PARTS)}",
                                 code="malformed_multipart")
            files[key] = await value.read()
        elif key == "spec":
            spec = parse_json(value)
        else:
            raise BadRequest(f"unexpected form field {key!r}; put parameters in the `spec` part",
                             code="malformed_multipart")
    return validate(model, spec), files


def resolve_image(ref: ImageRef | None, part: bytes | None, images: ImageStore, name: str = "image", *,
                  datasets: DatasetStore) -> bytes:
    """The bytes of an image given as id, dataset image, inline base64 or multipart part (exactly one)."""
    if (ref is None) == (part is None):
        raise Invalid(f"give the {name} exactly once: as {{\"id\"}}, {{\"dataset\", \"index\"}}, {{\"data\"}} or a "
                      f"multipart part `{name}`", code="image_required")
    if part is not None:
        return part
    if isinstance(ref, ImageById):
        return images.get(current_owner.get(), ref.id)
    if isinstance(ref, ImageInDataset):
        return datasets.get(ref.dataset, current_owner.get()).image(ref.index)[1]
    assert isinstance(ref, ImageByData)
    try:
        return base64.b64decode(ref.data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{name}.data is not valid base64", code="bad_base64") from None
