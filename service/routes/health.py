"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import error_body
from core.jobs.keys import JobKeys
from core.jobs.workers import WorkerBoard
from service.auth import require_metrics_token
from service.context import AppContext, context
from service.metrics import (
    BLOB_CACHE_BYTES,
    BLOB_CORRUPT,
    BLOB_FETCHES,
    FORWARD_BATCHES,
    ORT_SESSIONS,
    SESSION_BUDGET,
    SESSION_BUILDS,
    SESSION_BYTES,
    SESSION_EVICTIONS,
    WORKER_CACHE,
)
from service.openapi_docs import media_response

router = APIRouter(tags=["service"])


@router.get("/healthz", operation_id="getHealth")
async def healthz() -> dict:  # on the event loop itself: no thread-pool hop to wait behind while uploads run
    """200 while the process lives."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="getReadiness",
            responses={503: {"description": "Redis or the model store is unavailable, or the service is warming up"}})
def readyz(ctx: AppContext = Depends(context)) -> Response:
    """200 when Redis answers, the model store is readable and the built-in model's session is warm (built, its batch
    size measured, run once); else 503 with the reasons."""
    problems = []
    if ctx.warmer is not None and not ctx.warmer.ready.is_set():
        problems.append("warming up: the built-in model's session is being built")
    try:
        ctx.redis.ping()
    except Exception as exc:  # any Redis failure means not ready
        problems.append(f"redis: {exc.__class__.__name__}")
    reason = ctx.models.readable()
    if reason:
        problems.append(reason)
    if problems:
        return JSONResponse(error_body("not_ready", "; ".join(problems), problems), status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", operation_id="getMetrics", response_class=Response, dependencies=[Depends(require_metrics_token)],
            responses={**media_response("text/plain"), 401: {"description": "CONVSCOPE_METRICS_TOKEN is set and "
                                                                              "this request does not carry it"}})
def metrics(ctx: AppContext = Depends(context)) -> Response:
    """Prometheus text format."""
    sessions = ctx.runtimes.sessions.stats()
    ORT_SESSIONS.set(sessions["sessions"])
    SESSION_BYTES.set(sessions["bytes"])
    SESSION_BUDGET.set(ctx.runtimes.sessions.budget_bytes)
    SESSION_EVICTIONS.set(sessions["evictions"])
    SESSION_BUILDS.set(sessions["builds"])
    if ctx.runtimes.batcher is not None:
        figures = ctx.runtimes.batcher.figures
        for figure in ("batches", "requests", "rows"):
            FORWARD_BATCHES.labels(figure).set(getattr(figures, figure))
    blobs = ctx.models.blobs
    if ctx.models.storage.remote:
        BLOB_CACHE_BYTES.set(blobs.held_bytes())
    BLOB_FETCHES.set(blobs.fetches)
    BLOB_CORRUPT.set(blobs.corrupt)
    WORKER_CACHE.clear()
    try:
        published = WorkerBoard(ctx.redis, JobKeys(ctx.settings.redis_prefix)).stats()
    except redis.RedisError:
        published = {}
    for worker, caches in published.items():
        for cache, figures in caches.items():
            for figure, value in figures.items():
                WORKER_CACHE.labels(worker, cache, figure).set(value)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
