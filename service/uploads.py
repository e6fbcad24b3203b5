"""Reading a model upload (`POST /v1/models` multipart) and handing it to `models.register`.

The body is counted while it streams in and refused (413) past `max_model_bytes`, before it is
parsed. Parts: `file` (the ONNX file, required), `name`, `labels` (a text file or field, one
label a line) and `preprocess` (JSON of `Preprocess`, plus `input_size` for models whose H/W
are dynamic). Registration itself (sandboxed analysis, atomic writes) runs in a worker thread,
so the event loop keeps answering other requests while a model is analysed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from pydantic import ConfigDict, Field
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from core.errors import BadRequest, Invalid, TooLarge
from core.model_record import ModelRecord, Preprocess
from core.settings import Settings
from models.register import register
from models.sandbox import SandboxLimits
from models.validate import Limits, ModelRejected
from service.bodies import FORM_SLACK, BodyRules, parse_json, received, validate

FIELDS = ("file", "name", "labels", "preprocess")


class UploadPreprocess(Preprocess):
    """`Preprocess` as uploaded, plus the size to use a model with dynamic H/W at."""

    model_config = ConfigDict(extra="forbid")
    input_size: int | list[int] | None = Field(
        None, description="H and W (or one number for both) for models whose input size is dynamic; default the "
        "crop size when `crop` names one, else 224")


@dataclass
class ModelUpload:
    data: bytes
    name: str
    labels: list[str] | None
    preprocess: Preprocess | None
    input_size: tuple[int, int] | None


def limits(settings: Settings) -> tuple[Limits, SandboxLimits]:
    return (Limits(max_bytes=settings.max_model_bytes, min_opset=settings.model_min_opset,
                   max_opset=settings.model_max_opset, max_nodes=settings.max_model_nodes,
                   max_input_pixels=settings.max_model_input_pixels,
                   max_constant_elements=settings.max_model_constant_elements,
                   max_flops=int(settings.max_model_gflops * 1e9),
                   max_activation_bytes=settings.max_model_activation_bytes),
            SandboxLimits(memory_bytes=settings.probe_memory_bytes, time_s=settings.probe_time_limit_s,
                          threads=settings.probe_threads))


def upload_rules(settings: Settings) -> BodyRules:
    """The body of `POST /v1/models`: the ONNX file and a few small text parts."""
    return BodyRules(max_bytes=settings.max_model_bytes + FORM_SLACK, max_files=2, max_fields=8,
                     hint="the model as multipart/form-data with the ONNX file in part `file`",
                     too_large="model_too_large",
                     too_large_message=f"the upload is over the limit of {settings.max_model_bytes} bytes for a model")


async def read_upload(request: Request, settings: Settings) -> ModelUpload:
    """Parse the multipart body, refusing it (413) as soon as it passes the byte limit."""
    async with received(request, upload_rules(settings)) as body:
        return await _fields(body.form, settings)


async def _fields(form: FormData, settings: Settings) -> ModelUpload:
    parts: dict[str, object] = {}
    for key, value in form.multi_items():
        if key not in FIELDS:
            raise BadRequest(f"unexpected form part {key!r}; the parts are {', '.join(FIELDS)}",
                             code="malformed_multipart")
        if key in parts:
            raise BadRequest(f"form part {key!r} is given twice", code="malformed_multipart")
        parts[key] = value
    file = parts.get("file")
    if not isinstance(file, UploadFile):
        raise Invalid("send the ONNX file as the multipart file part `file`", code="model_file_required")
    data = await file.read()
    if not data:
        raise Invalid("the model file is empty", code="not_onnx")
    name = parts.get("name") or (file.filename or "").rsplit("/", 1)[-1].removesuffix(".onnx") or "model"
    if not isinstance(name, str) or len(name) > 200:
        raise Invalid("`name` must be a text field of at most 200 characters", code="validation_error")
    labels = await _labels(parts.get("labels"), settings.max_labels_bytes)
    preprocess, size = _preprocess(parts.get("preprocess"))
    return ModelUpload(data, name.strip() or "model", labels, preprocess, size)


async def _labels(part, limit: int) -> list[str] | None:
    if part is None:
        return None
    raw = await part.read() if isinstance(part, UploadFile) else part.encode()
    if len(raw) > limit:
        raise TooLarge(f"the labels file is {len(raw)} bytes; the limit is {limit}", code="labels_too_large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("the labels file is not UTF-8 text", code="bad_labels") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise Invalid("the labels file has no labels", code="bad_labels")
    if "" in lines:
        raise Invalid(f"label on line {lines.index('') + 1} is empty; give one label a line", code="bad_labels")
    return lines


def _preprocess(part) -> tuple[Preprocess | None, tuple[int, int] | None]:
    if part is None:
        return None, None
    raw = part if isinstance(part, str) else None
    if raw is None:
        raise BadRequest("`preprocess` must be a text field holding JSON", code="malformed_multipart")
    given = validate(UploadPreprocess, parse_json(raw))
    size = given.input_size
    if isinstance(size, list):
        if len(size) != 2 or min(size) < 1:
            raise Invalid("preprocess.input_size is [height, width] or one number", code="validation_error")
        size = (size[0], size[1])
    elif size is not None:
        if size < 1:
            raise Invalid("preprocess.input_size must be positive", code="validation_error")
        size = (size, size)
    explicit = given.model_fields_set - {"input_size"}
    preprocess = Preprocess.model_validate(given.model_dump(include=explicit)) if explicit else None
    return preprocess, size


def model_id(name: str) -> str:
    """A new id: the name as a slug, and 8 random hex digits (the same file may be uploaded twice)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "model"
    return f"{slug}-{secrets.token_hex(4)}"


def register_upload(store, upload: ModelUpload, settings: Settings, owner: str | None) -> ModelRecord:
    """Blocking: sandboxed analysis and atomic writes; `ModelRejected` becomes 413/422."""
    model_limits, sandbox = limits(settings)
    try:
        return register(store, upload.data, model_id=model_id(upload.name), name=upload.name, source="upload",
                        preprocess=upload.preprocess, labels=upload.labels, owner=owner, limits=model_limits,
                        sandbox=sandbox, input_size=upload.input_size)
    except ModelRejected as exc:
        error = TooLarge if exc.status == 413 else Invalid
        raise error(exc.message, code=exc.code, details=exc.details) from None
