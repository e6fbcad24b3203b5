"""Following a job as server-sent events, with the API key or with the job's events token.

`fetch` streaming sends `Authorization: Bearer <key>` like every other call; `EventSource`, which
cannot send headers, opens `/v1/jobs/{id}/events?token=<the Job's events_token>` instead (see
`service/events_token.py`). This route is therefore outside the routers that require the key.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service.auth import enter_as, require_key
from service.jobs import JobService
from service.openapi_docs import errors, media_response
from service.routes.jobs import jobs
from service.tenants import HeldStream

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
TOKEN_DOC = ("the Job's `events_token`, in place of the `Authorization` header (for `EventSource`, which cannot "
             "send headers); it opens this job's events only, until it expires")


async def events_owner(job_id: str, request: Request,
                       token: str | None = Query(None, min_length=1, max_length=512, description=TOKEN_DOC)) -> str | None:
    """The caller's tenant: from the events token when one is given, else from the API key."""
    if token is None:
        return await require_key(request)
    return await enter_as(request, await run_in_threadpool(request.app.state.jobs.tokens.verify, token, job_id))


@router.get("/{job_id}/events", operation_id="getJobEvents", response_class=StreamingResponse, responses={
    **media_response("text/event-stream", description="`progress`, `preview` and `artifact` events (`{name, "
                     "media_type, url}`: a file readable before the job ends), then one `end` whose data is the Job"),
    **errors(401, 404, 429, 503)})
async def job_events(job_id: str, request: Request, owner: str | None = Depends(events_owner),
                     service: JobService = Depends(jobs)) -> StreamingResponse:
    """Follow a job as server-sent events; reconnecting with `Last-Event-ID` resumes where it left off. A key may
    follow `max_holds_per_key` streams (and `?wait=`s) at once; more → 429 `too_many_holds`."""
    await run_in_threadpool(service.record, job_id, owner)
    tenants = request.app.state.tenants
    tenants.take(owner)
    return HeldStream(tenants, owner, service.events(job_id, request.headers.get("last-event-id")),
                      media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
