"""Forward views answered in the request: predict, activations, occlusion (ONNX Runtime)."""

from __future__ import annotations

import json
import time

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from PIL import Image

from core import encoding, images, preprocessing, render, timing
from core.errors import Invalid
from core.model_record import ModelRecord
from core.stores.datasets import DatasetStore
from models import deadline, forward, runtimes
from service.admission import beyond_share
from service.auth import current_owner
from service.bodies import read_request, resolve_image
from service.context import AppContext, context
from service.openapi_docs import errors, json_or_multipart, media_response
from service.schemas import (
    ActivationsRequest,
    ActivationsResponse,
    ImageById,
    OcclusionRequest,
    OcclusionResponse,
    PredictRequest,
    PredictResponse,
    ViewRequest,
)

router = APIRouter(prefix="/v1/models", tags=["forward views"])
ERRORS = errors(400, 404, 413, 415, 422, 503)
MEDIA = {"png": "image/png", "npy": "application/x-npy", "json": "application/json"}


def choose_format(asked: str | None, request: Request) -> str:
    if asked:
        return asked
    accept = request.headers.get("accept", "")
    for fmt, media in (("json", "application/json"), ("npy", "application/x-npy")):
        if media in accept and "image/png" not in accept:
            return fmt
    return "png"


def model_input(ctx: AppContext, record: ModelRecord, spec: ViewRequest,
                files: dict[str, bytes]) -> tuple[np.ndarray, Image.Image]:
    """Decode the request's image and make it the model's input: (1×C×H×W tensor, fitted RGB image), from the
    input cache when this image was prepared for this model before. An image given by id is looked up by its id
    (the digest of its bytes, as `images.image_id` makes it), so a cached one is not fetched from Redis again;
    the caller must still have it (the cache is shared by every key): one TTL read, at most once per
    `image_lease_s`. An input not cached is fetched, which finds the image or not."""
    s = ctx.settings
    check = None
    if isinstance(spec.image, ImageById) and "image" not in files:
        digest, data = spec.image.id, None
        owner = current_owner.get()
        check = lambda: ctx.images.require(owner, digest)  # noqa: E731
    else:
        data = resolve_image(spec.image, files.get("image"), ctx.images, datasets=DatasetStore.open(s))
        digest = images.image_id(data)

    def prepare():
        raw = data if data is not None else resolve_image(spec.image, None, ctx.images, datasets=DatasetStore.open(s))
        decoded = images.decode(raw, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
        fitted = preprocessing.fit(decoded, record, max_pixels=s.max_resized_pixels)
        tensor = preprocessing.to_tensor(fitted, record)
        tensor.setflags(write=False)
        return tensor, fitted

    return ctx.inputs.get((digest, record.id, record.onnx_sha256), prepare, check)


def check_colormap(name: str) -> None:
    try:
        render.lut(name)
    except KeyError:
        raise Invalid(f"unknown colour map {name!r}", code="unknown_colormap",
                      details={"examples": ["inferno", "viridis", "magma", "jet", "gray"]}) from None


async def _spec(request: Request, ctx: AppContext, model: type):
    with timing.timed("decode"):
        return await read_request(request, model, ctx.settings.max_body_bytes)


async def in_pool(ctx: AppContext, work):
    """`work()` on the views' threads (`service.lanes`; no ONNX Runtime on the event loop); the wait for a thread is
    the request's queue time (`core.timing`; the thread inherits the request's context, its phases included). Its
    forward runs share one time limit (`models.deadline`). It counts as in flight from its decode to its encode, not
    only during its forward runs: background session work (a layer's first request hands one over) starts after it,
    not beside its encoding (`models.runtimes.InFlight`)."""
    asked = time.perf_counter()

    def timed():
        timing.wait(time.perf_counter() - asked)
        with ctx.runtimes.in_flight.running(), deadline.request():
            return work()
    return await ctx.lanes.run(timed, beyond_share())


@router.post("/{model}/predict", operation_id="predict", response_model=PredictResponse, responses=ERRORS,
             openapi_extra=json_or_multipart(PredictRequest))
async def predict(model: str, request: Request, ctx: AppContext = Depends(context)) -> PredictResponse:
    """Top-k classes of one image (softmax probabilities and logits); 422 `no_class_scores` for a model
    without class scores."""
    record = ctx.model(model)
    record.require_class_scores("the predict view")
    spec, files = await _spec(request, ctx, PredictRequest)

    def work() -> bytes:
        with timing.timed("decode"):
            x, _ = model_input(ctx, record, spec, files)
        with timing.timed("forward"):
            predictions = forward.predict(ctx.runtimes.get(record), x, spec.top_k)
        with timing.timed("encode"):
            return PredictResponse(predictions=predictions).model_dump_json().encode()

    return Response(await in_pool(ctx, work), media_type="application/json")  # built once, not validated again


@router.post("/{model}/activations", operation_id="getActivations", response_class=Response,
             responses={**media_response("image/png", "application/x-npy", json=ActivationsResponse), **ERRORS},
             openapi_extra=json_or_multipart(ActivationsRequest))
async def activations(model: str, request: Request, ctx: AppContext = Depends(context)) -> Response:
    """A layer's feature maps: PNG grid, JSON statistics (`ActivationsResponse`) or raw C×H×W npy."""
    record = ctx.model(model)
    spec, files = await _spec(request, ctx, ActivationsRequest)
    layer = record.require_layer(spec.layer)
    channels = spec.channels if spec.channels is not None else list(range(layer.shape[0]))
    if spec.channels is not None:
        bad = [c for c in channels if not 0 <= c < layer.shape[0]]
        if bad or not channels:
            raise Invalid(f"channels must be in 0..{layer.shape[0] - 1}; got {bad[:10] or 'none'}",
                          code="channel_out_of_range")
    check_colormap(spec.colormap)
    fmt = choose_format(spec.format, request)

    def work() -> bytes:
        with timing.timed("decode"):
            x, _ = model_input(ctx, record, spec, files)
        with timing.timed("forward"):
            maps = ctx.runtimes.get(record).layer(x, layer.name)[0]
            if spec.channels is not None:  # a copy of the channels asked for; all of them need none
                maps = maps[channels]
        with timing.timed("encode"):
            return encode_maps(maps)

    def encode_maps(maps: np.ndarray) -> bytes:
        if fmt == "npy":
            return encoding.npy(maps)
        if fmt == "json":
            body = ActivationsResponse(layer=layer.name, shape=list(maps.shape), channels=channels,
                                       stats=forward.activation_stats(maps))
            return body.model_dump_json().encode()
        return render.feature_grid_png(maps, per=spec.normalize, cmap=spec.colormap)

    return Response(await in_pool(ctx, work), media_type=MEDIA[fmt])


@router.post("/{model}/occlusion", operation_id="getOcclusion", response_class=Response,
             responses={**media_response("image/png", "application/x-npy", json=OcclusionResponse), **ERRORS},
             openapi_extra=json_or_multipart(OcclusionRequest))
async def occlusion(model: str, request: Request, ctx: AppContext = Depends(context)) -> Response:
    """Occlusion sensitivity (Zeiler & Fergus 2014): the target's probability with a patch covered.

    PNG: the drop in probability blended over the image; JSON: `OcclusionResponse`; npy: the map.
    422 `no_class_scores` for a model without class scores.
    """
    record = ctx.model(model)
    record.require_class_scores("the occlusion view")
    spec, files = await _spec(request, ctx, OcclusionRequest)
    if spec.patch > min(record.input.height, record.input.width):
        raise Invalid(f"patch {spec.patch} px is larger than the model input "
                      f"({record.input.height}×{record.input.width})", code="patch_too_large")
    check_colormap(spec.colormap)
    fmt = choose_format(spec.format, request)

    def work() -> bytes:
        with timing.timed("decode"):
            x, fitted = model_input(ctx, record, spec, files)
        with timing.timed("forward"):
            rt = ctx.runtimes.get(record)
            target = resolve_target(record, spec.target, rt, x)
            prob_map, baseline, _ = forward.occlusion(rt, x, target, spec.patch, spec.stride, spec.fill,
                                                      ctx.settings.occlusion_batch)
        with timing.timed("encode"):
            return encode_map(x, fitted, target, prob_map, baseline)

    def encode_map(x: np.ndarray, fitted: Image.Image, target: int, prob_map: np.ndarray, baseline: float) -> bytes:
        if fmt == "npy":
            return encoding.npy(prob_map)
        if fmt == "json":
            return json.dumps({"target": target, "label": record.label(target), "map": prob_map.tolist(),
                               "baseline_probability": baseline, "patch": spec.patch,
                               "stride": spec.stride}).encode()
        heat = forward.occlusion_heat(prob_map, baseline, x.shape[2:], spec.patch, spec.stride)
        return encoding.png(render.overlay(fitted, heat, cmap=spec.colormap))

    return Response(await in_pool(ctx, work), media_type=MEDIA[fmt])


def resolve_target(record: ModelRecord, target: int | str | None, rt: runtimes.ModelRuntime, x: np.ndarray) -> int:
    """A class index from a request's `target`; the top-1 class when it is omitted."""
    if target is None:
        return int(np.argmax(rt.logits(x)[0]))
    try:
        return record.class_index(target)
    except ValueError as exc:
        raise Invalid(str(exc), code="unknown_target") from None

