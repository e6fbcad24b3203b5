"""Model listing, details and filter grids."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool

from models.record import ModelInfo
from service import render
from service.auth import visible
from service.context import AppContext, context
from service.errors import Invalid
from service.schemas import ErrorResponse, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList)
def list_models(ctx: AppContext = Depends(context)) -> ModelList:
    """Every model the caller can use (without layer lists)."""
    return ModelList(models=[r.info(with_layers=False) for r in ctx.models.list() if visible(r.owner)])


@router.get("/{model}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
def get_model(model: str, ctx: AppContext = Depends(context)) -> ModelInfo:
    """One model with its layer list (shapes and receptive fields)."""
    return ctx.model(model).info(with_layers=True)


@router.get("/{model}/layers/{layer:path}/filters", response_class=Response,
            responses={200: {"content": {"image/png": {}, "application/x-npy": {}}},
                       404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
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
    if record.layer(layer) is None:
        raise Invalid(f"model {model!r} has no layer {layer!r}", code="unknown_layer")

    def work() -> bytes:
        weights = ctx.runtimes.get(record).conv_weights(layer)
        if weights is None:
            raise Invalid(f"layer {layer!r} is not a convolution; filters exist only for Conv layers",
                          code="not_a_convolution")
        if format == "npy":
            return render.npy(weights)
        shown = weights[:max_filters]
        if shown.shape[1] != 3:
            shown = shown[:, : max(1, 4096 // len(shown))]
        return render.png(render.tile_grid(render.filter_tiles(shown)))

    media = "image/png" if format == "png" else "application/x-npy"
    return Response(await run_in_threadpool(work), media_type=media)
