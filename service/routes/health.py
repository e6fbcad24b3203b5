"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import error_body
from service.context import AppContext, context
from service.metrics import ORT_SESSIONS
from service.openapi_docs import media_response

router = APIRouter(tags=["service"])


@router.get("/healthz", operation_id="getHealth")
def healthz() -> dict:
    """200 while the process lives."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="getReadiness",
            responses={503: {"description": "Redis or the model store is unavailable"}})
def readyz(ctx: AppContext = Depends(context)) -> Response:
    """200 when Redis answers and the model store is readable; else 503 with the reason."""
    problems = []
    try:
        ctx.redis.ping()
    except Exception as exc:  # any Redis failure means not ready
        problems.append(f"redis: {exc.__class__.__name__}")
    if not ctx.models.readable():
        problems.append(f"model store {ctx.models.root} is not readable")
    if problems:
        return JSONResponse(error_body("not_ready", "; ".join(problems), problems), status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", operation_id="getMetrics", response_class=Response, responses=media_response("text/plain"))
def metrics(ctx: AppContext = Depends(context)) -> Response:
    """Prometheus text format."""
    ORT_SESSIONS.set(ctx.runtimes.count())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
