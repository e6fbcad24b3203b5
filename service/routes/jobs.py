"""Queued jobs: submit, read, list, fetch artifacts, cancel (following one: `job_events.py`). One route set for every kind."""

from __future__ import annotations

from contextlib import nullcontext

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from core.errors import Invalid, NotFound
from core.jobs.status import ENDED, JobStatus
from core.kinds.registry import KINDS
from service.bodies import read_request
from service.context import AppContext, context
from service.job_schemas import Job, JobList, JobRequest
from service.jobs import MAX_WAIT_S, JobService, view
from service.openapi_docs import errors, json_or_multipart, media_response

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def jobs(request: Request) -> JobService:
    """FastAPI dependency: the app's job service (async, like `service.context.context`: no thread hop)."""
    return request.app.state.jobs


def owner(request: Request) -> str | None:
    """The caller's tenant, set by the API-key dependency when keys are configured (else None)."""
    return getattr(request.state, "owner", None)


SUBMIT_DOC = json_or_multipart(JobRequest, files=("image", "style_image"))


@router.post("", operation_id="submitJob", status_code=202, response_model=Job,
             responses={200: {"model": Job}, **errors(400, 404, 413, 415, 422, 429, 503)}, openapi_extra=SUBMIT_DOC)
async def submit(request: Request, response: Response,
                 wait: float = Query(0, ge=0, le=MAX_WAIT_S, description="seconds to hold the answer until the job ends"),
                 ctx: AppContext = Depends(context), service: JobService = Depends(jobs)):
    """Queue a job of any kind (202 + `Location`); with `?wait=`, an ended job comes back with 200. A wait holds a
    Redis connection: a key may hold `max_holds_per_key` (with its event streams); more → 429 `too_many_holds`."""
    body, files = await read_request(request, JobRequest, ctx.settings.max_body_bytes)
    job_request = body.root
    record = ctx.model(job_request.model)
    with request.app.state.tenants.hold(owner(request)) if wait else nullcontext():  # taken before the job is queued
        job = await run_in_threadpool(service.submit, job_request, record, files, owner(request))
        if wait and job.status not in ENDED:
            ended = await service.wait(job.id, wait)
            if ended is None:  # gone while we waited (Redis was emptied)
                raise NotFound(f"job {job.id} no longer exists", code="job_not_found")
            job = view(ended, job.events_token)
    status = 200 if job.status in ENDED else 202
    return JSONResponse(job.model_dump(mode="json"), status_code=status, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("", operation_id="listJobs", response_model=JobList, responses=errors(422, 503))
def list_jobs(request: Request,
              status: JobStatus | None = None,
              kind: str | None = Query(None, description="one of the registered kinds"),
              limit: int = Query(50, ge=1, le=500),
              service: JobService = Depends(jobs)) -> JobList:
    """The caller's jobs, newest first."""
    if kind is not None and kind not in KINDS:
        raise Invalid(f"unknown kind {kind!r}", code="unknown_kind", details={"kinds": sorted(KINDS)})
    return JobList(jobs=service.list(owner(request), status, kind, limit))


@router.get("/{job_id}", operation_id="getJob", response_model=Job, responses=errors(404, 503))
def get_job(job_id: str, request: Request, service: JobService = Depends(jobs)) -> Job:
    """One job: status, progress, params, and once finished its result (metrics and artifact URLs)."""
    return service.get(job_id, owner(request))


@router.get("/{job_id}/artifacts/{name}", operation_id="getJobArtifact", response_class=Response, responses={
    **media_response("application/x-npy", "image/png", "application/json"), **errors(404, 409, 503)})
async def job_artifact(job_id: str, name: str, request: Request, service: JobService = Depends(jobs)) -> Response:
    """One artifact of a finished job; while it runs, 409, except for the files announced by an `artifact` event
    (an attribution map, its heatmap and ranking map, readable while the map's scores are computed)."""
    data, media = await service.artifact(job_id, name, owner(request))
    return Response(data, media_type=media)


@router.delete("/{job_id}", operation_id="cancelJob", response_model=Job,
               responses={202: {"model": Job}, **errors(404, 409, 503)})
def cancel_job(job_id: str, request: Request, service: JobService = Depends(jobs)) -> JSONResponse:
    """Cancel: a queued job never runs (200, `canceled`); a running one stops at its next step (202)."""
    job = service.cancel(job_id, owner(request))
    return JSONResponse(job.model_dump(mode="json"), status_code=200 if job.status in ENDED else 202)

