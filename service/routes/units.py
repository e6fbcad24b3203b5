"""Units of a layer: a unit's circuit, the units of the layer before with the largest expanded weights into it
(`models.circuit`), answered from the model's weights in the request."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from core import encoding, timing
from core.errors import Invalid
from models import circuit
from service.context import AppContext, context
from service.openapi_docs import errors, media_response

router = APIRouter(prefix="/v1/models", tags=["units"])


class CircuitInput(BaseModel):
    layer: str = Field(description="the source layer (a `name` of the layer list, or the model's input)")
    channel: int
    weight: float = Field(description="the sum of the window (a 1×1 window's value itself)")
    norm: float = Field(description="the L2 norm of the window: what the inputs are ranked by")
    weights: list[list[float]] = Field(description="the signed kh×kw window of expanded weights on the source grid")
    origin: list[int] = Field(description="[y, x] of the window's top-left on the source layer's grid (it may lie "
                                          "past the edge; weights there are 0)")


class CircuitResponse(BaseModel):
    layer: str
    channel: int
    position: list[int] = Field(description="[y, x]: the unit's centre on its layer's grid, where the gradient is read")
    sources: list[str] = Field(description="the layers whose units feed this one")
    inputs: list[CircuitInput] = Field(description="the k strongest input units, by norm, strongest first")


@router.get("/{model}/layers/{layer:path}/units/{channel}/circuit", operation_id="getCircuit",
            response_model=CircuitResponse,
            responses={**media_response("image/png", json=CircuitResponse), **errors(404, 422, 503)})
def unit_circuit(
    model: str,
    layer: str,
    channel: int = Path(ge=0, le=65535, description="the unit's channel in the layer"),
    k: int = Query(8, ge=1, le=256, description="how many input units to return"),
    source: str | None = Query(None, min_length=1, max_length=512,
                               description="an earlier layer to read the weights from (default: the previous layer, "
                                           "or the branches feeding this one)"),
    format: Literal["json", "png"] = "json",
    ctx: AppContext = Depends(context),
) -> Response:
    """The `k` units of the previous layer (or of the branches feeding it) with the largest expanded weights into
    the unit at the centre of the layer's grid: for adjacent convolutions the kernel slice itself; through ReLUs,
    pooling and BatchNorm the gradient of the unit with ReLUs taken as the identity. PNG: the windows as a grid,
    red positive, blue negative."""
    record = ctx.model(model)
    found = record.require_layer(layer)
    if channel >= found.shape[0]:
        raise Invalid(f"layer {layer!r} has {found.shape[0]} channels; channel {channel} is out of range",
                      code="channel_out_of_range")

    def work() -> bytes:
        with timing.timed("forward"):  # Server-Timing: the weights walked back from the unit are this view's forward
            weights = ctx.runtimes.get(record).weight_graph()
            windows = weights.expanded(layer, channel, source)
            inputs = circuit.strongest(windows, k)
        with timing.timed("encode"):
            if format == "png":
                return encoding.png(circuit.picture(inputs))
            _, _, height, width = weights.shapes[layer]
            return CircuitResponse(
                layer=layer, channel=channel, position=[height // 2, width // 2], sources=list(windows),
                inputs=[CircuitInput(layer=i.layer, channel=i.channel, weight=i.weight, norm=i.norm,
                                     weights=i.weights.tolist(), origin=list(i.origin)) for i in inputs],
            ).model_dump_json().encode()

    media = "image/png" if format == "png" else "application/json"
    return Response(work(), media_type=media)
