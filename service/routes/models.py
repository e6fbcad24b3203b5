"""Model listing, details and filter grids."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from core import encoding, render, timing
from core.errors import Forbidden, Invalid, Overloaded, TooLarge
from core.model_record import ModelInfo, ModelRecord
from service import uploads
from service.auth import current_owner, visible
from service.context import AppContext, context
from service.openapi_docs import errors, file_part, media_response, multipart_body, text_part
from service.schemas import ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])
UPLOAD_BODY = multipart_body(
    file_part("file", "the ONNX model (self-contained, opset 7-22)", required=True),
    text_part("name", "display name (default: the file name)"),
    file_part("labels", "text file, one class label a line"),
    text_part("preprocess", "JSON of `preprocess` (mean, std, scale, color, resize, crop) plus `input_size` "
              "([H, W]) for models with a dynamic input size; `crop` is true/false or, as torchvision's "
              "CenterCrop writes it, a size (224 or [H, W]) that must equal a fixed input size and sets a "
              "dynamic one"))


@router.get("", operation_id="listModels", response_model=ModelList)
def list_models(ctx: AppContext = Depends(context)) -> ModelList:
    """Every model the caller can use (without layer lists): built-in models first, then uploads, newest first."""
    records = sorted((r for r in ctx.models.list() if visible(r.owner)),
                     key=lambda r: (r.source != "builtin", -r.created_at if r.source == "upload" else 0.0, r.name))
    return ModelList(models=[r.info(with_layers=False) for r in records])


@router.post("", operation_id="uploadModel", status_code=201, response_model=ModelInfo, openapi_extra=UPLOAD_BODY,
             responses=errors(400, 413, 415, 422, 429))
async def upload_model(request: Request, ctx: AppContext = Depends(context)) -> JSONResponse:
    """Upload an ONNX classifier. It is validated (static checks, then a probe run and a torch-twin
    check in a sandboxed process) before it is kept; a refusal is 422 with the reason."""
    slots = request.app.state.upload_slots  # made by `create_app`: `max_concurrent_uploads`
    if not slots.acquire(blocking=False):
        raise Overloaded("another model is being uploaded; retry in a little while", code="uploads_busy",
                         retry_after=10)
    try:
        owner = current_owner.get()
        check_quota(ctx, owner, 0)
        upload = await uploads.read_upload(request, ctx.settings)
        check_quota(ctx, owner, len(upload.data))
        record = await run_in_threadpool(uploads.register_upload, ctx.models, upload, ctx.settings, owner)
    finally:
        slots.release()
    info = record.info(with_layers=True)
    return JSONResponse(info.model_dump(mode="json"), status_code=201, headers={"Location": f"/v1/models/{record.id}"})


def uploaded_models(ctx: AppContext, owner: str | None) -> list[ModelRecord]:
    """The models `owner` uploaded (what counts against its model quotas)."""
    return [r for r in ctx.models.list() if r.source == "upload" and r.owner == owner]


def check_quota(ctx: AppContext, owner: str | None, incoming: int) -> None:
    """Per-key limits on uploaded models: their number (429) and their bytes (413)."""
    held = uploaded_models(ctx, owner)
    s = ctx.settings
    if len(held) >= s.max_models_per_key:
        raise Overloaded(f"this key already holds {len(held)} models (the limit is {s.max_models_per_key}); "
                         "delete one first", code="model_quota", retry_after=3600)
    used = sum(r.size_bytes for r in held)
    if incoming and used + incoming > s.max_model_bytes_per_key:
        raise TooLarge(f"this key's models would take {used + incoming} bytes; the limit is "
                       f"{s.max_model_bytes_per_key}; delete a model first", code="model_quota_bytes")


@router.delete("/{model}", operation_id="deleteModel", status_code=204, response_class=Response,
               responses=errors(403, 404))
def delete_model(model: str, request: Request, ctx: AppContext = Depends(context)) -> Response:
    """Delete an uploaded model (its file goes when no other model uses it); built-in models stay. A model
    uploaded while the service was open belongs to no key: once keys are on, only an operator tenant
    (`CONVSCOPE_OPERATOR_TENANTS`) may delete it, not every key that can see it."""
    record = ctx.model(model)
    if record.source == "builtin":
        raise Forbidden(f"{model!r} is a built-in model; only uploaded models can be deleted", code="builtin_model")
    operators = {name.strip() for name in ctx.settings.operator_tenants.split(",")}
    if record.owner is None and not request.app.state.auth.open and current_owner.get() not in operators:
        raise Forbidden(f"{model!r} was uploaded while the service was open and belongs to no key; only an operator "
                        "key (CONVSCOPE_OPERATOR_TENANTS) may delete it", code="not_owner")
    ctx.models.delete(record.id)
    ctx.runtimes.drop(record.id)
    return Response(status_code=204)


@router.get("/{model}", operation_id="getModel", response_model=ModelInfo, responses=errors(404))
def get_model(model: str, ctx: AppContext = Depends(context)) -> ModelInfo:
    """One model with its layer list (shapes and receptive fields)."""
    return ctx.model(model).info(with_layers=True)


@router.get("/{model}/layers/{layer:path}/filters", operation_id="getFilters", response_class=Response,
            responses={**media_response("image/png", "application/x-npy"), **errors(404, 422)})
async def filters(
    model: str,
    layer: str,
    format: Literal["png", "npy"] = "png",
    max_filters: int = Query(64, ge=1, le=4096, description="first N output filters shown in the PNG"),
    ctx: AppContext = Depends(context),
) -> Response:
    """A convolution layer's weights: PNG tile grid (colour for 3-channel inputs, else one grey tile
    per input-channel slice) or the raw O×I×kh×kw array as npy."""
    record = ctx.model(model)
    record.require_layer(layer)

    def work() -> bytes:
        with timing.timed("forward"):  # Server-Timing: reading the weights (once per layer) is this view's forward
            weights = ctx.runtimes.get(record).conv_weights(layer)
        with timing.timed("encode"):
            return draw(weights)

    def draw(weights) -> bytes:
        if weights is None:
            raise Invalid(f"layer {layer!r} is not a convolution; filters exist only for Conv layers",
                          code="not_a_convolution")
        if format == "npy":
            return encoding.npy(weights)
        shown = weights[:max_filters]
        if shown.shape[1] != 3:
            shown = shown[:, : max(1, 4096 // len(shown))]
        return encoding.png(render.tile_grid(render.filter_tiles(shown)))

    media = "image/png" if format == "png" else "application/x-npy"
    return Response(await run_in_threadpool(work), media_type=media)
