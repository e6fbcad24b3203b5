"""OpenAPI for what the routes read and answer by hand: bodies parsed by `service.bodies`, media responses.

FastAPI documents a request body only when a handler declares it as a parameter; routes that read
a size-limited stream themselves describe it here instead (`multipart_body`, `json_or_multipart`),
and the same for answers that are not one JSON model (`media_response`) and for the error shape
(`errors`). Pydantic models named this way are only `$ref`s in the routes; `add_components` puts
their schemas into the document.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from service.schemas import ErrorResponse

_REFERENCED: dict[str, type[BaseModel]] = {}  # models named by `$ref` here, by component name


@dataclass(frozen=True)
class Part:
    """One part of a multipart body: a file (binary) or a text field."""

    name: str
    description: str = ""
    file: bool = False
    many: bool = False  # the part may be repeated (an array of files)
    required: bool = False


def file_part(name: str, description: str = "", *, required: bool = False, many: bool = False) -> Part:
    return Part(name, description, file=True, many=many, required=required)


def text_part(name: str, description: str = "", *, required: bool = False) -> Part:
    return Part(name, description, required=required)


def multipart_body(*parts: Part) -> dict:
    """`openapi_extra` for a route whose body is multipart/form-data only."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _form(parts)}}}}


def json_or_multipart(model: type[BaseModel], files: tuple[str, ...] = ("image",)) -> dict:
    """`openapi_extra` for a body that is JSON of `model`, or multipart with `files` parts and the
    rest of the body as a JSON string in part `spec` (see API.md, Conventions)."""
    without = ", ".join(f"`{name}`" for name in files)
    parts = [file_part(name) for name in files]
    parts.append(text_part("spec", f"JSON of {model.__name__} (without {without})"))
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": ref(model)},
        "multipart/form-data": {"schema": _form(parts)}}}}


def media_response(*media: str, json: type[BaseModel] | None = None, description: str | None = None) -> dict:
    """`responses` entry for a 200 answered in one of several media types (JSON as `json` when given)."""
    content: dict = {name: {} for name in media}
    if json is not None:
        content["application/json"] = {"schema": ref(json)}
    answer: dict = {"content": content}
    if description:
        answer["description"] = description
    return {200: answer}


def errors(*statuses: int) -> dict:
    """`responses` entries for statuses answered with the JSON error shape."""
    return {status: {"model": ErrorResponse} for status in statuses}


def ref(model: type[BaseModel]) -> dict:
    """A `$ref` to `model`'s schema; `add_components` adds the schema itself."""
    _REFERENCED[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def add_components(schema: dict) -> dict:
    """Add the schemas of every model named by `ref` (and the models they use) to an OpenAPI document."""
    _validation_errors_as_error_shape(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in sorted(_REFERENCED.items()):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[name] = body
    if "HTTPValidationError" not in str(schema["paths"]):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def _validation_errors_as_error_shape(schema: dict) -> None:
    """FastAPI documents a 422 of its own shape (`HTTPValidationError`) on every route with parameters; this
    service answers every 422 with the one error shape (`service.app`'s validation handler), so say that."""
    error_shape = {"application/json": {"schema": ref(ErrorResponse)}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None and "HTTPValidationError" in str(invalid.get("content")):
                invalid["content"] = error_shape


def _form(parts: list[Part] | tuple[Part, ...]) -> dict:
    properties = {}
    for part in parts:
        prop: dict = {"type": "string", "format": "binary"} if part.file else {"type": "string"}
        if part.many:
            prop = {"type": "array", "items": prop}
        if part.description:
            prop["description"] = part.description
        properties[part.name] = prop
    form: dict = {"type": "object", "properties": properties}
    required = [part.name for part in parts if part.required]
    if required:
        form["required"] = required
    return form
