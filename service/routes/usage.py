"""`GET /v1/usage`: what the caller's key holds and uses of what every key shares, each against its limit."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from core.redis_client import redis_errors
from core.stores.datasets import DatasetStore
from core.stores.usage import IMAGE_BYTES, JOB_BYTES
from service.auth import current_owner
from service.context import AppContext, context
from service.jobs import JobService
from service.openapi_docs import errors
from service.routes.datasets import dataset_store
from service.routes.jobs import jobs
from service.routes.models import uploaded_models

router = APIRouter(prefix="/v1/usage", tags=["usage"])


class Held(BaseModel):
    """One quota: how much the key holds now, and the most it may."""

    held: int = Field(description="held now (bytes, or a count)")
    limit: int = Field(description="the most the key may hold; past it, 429 `quota_exceeded` (or the code named)")


class Usage(BaseModel):
    """The caller's key against its quotas (settings `quota_*`, `max_*_per_key`, `queue_max_length`)."""

    tenant: str | None = Field(description="the key's tenant (null when the service is open)")
    image_bytes: Held = Field(description="uploaded images and their cached previews, in Redis")
    job_bytes: Held = Field(description="job input files and artifacts, in Redis")
    models: Held = Field(description="uploaded models (429 `model_quota`)")
    model_bytes: Held = Field(description="bytes of uploaded models (413 `model_quota_bytes`)")
    datasets: Held = Field(description="datasets (429 `dataset_quota`)")
    dataset_bytes: Held = Field(description="bytes of dataset images")
    queued_jobs: Held = Field(description="jobs waiting in the key's queue (429 `queue_full`)")
    running_jobs: int = Field(description="the key's jobs running now (workers serve the keys' queues in turn)")
    max_running_jobs: int | None = Field(description="the most jobs of the key that run at once (more wait in its "
                                                     "queue); null: no cap")
    holds: Held = Field(description="event streams and `?wait=` holds open in the API process that answered "
                                    "(429 `too_many_holds`)")
    rate_limit_per_s: float | None = Field(description="requests a second the key may make on average (429 "
                                                       "`rate_limited`); null: no limit")


@router.get("", operation_id="getUsage", response_model=Usage, responses=errors(401, 503))
def get_usage(request: Request, ctx: AppContext = Depends(context), service: JobService = Depends(jobs),
              datasets: DatasetStore = Depends(dataset_store)) -> Usage:
    """What the caller's key holds against its limits: bytes in Redis, models, datasets, jobs, open streams."""
    s, owner = ctx.settings, current_owner.get()
    store = service.store
    with redis_errors():
        queued = store.client.llen(service.queue_of(owner).key)
        running = store.records.owners(store.records.started_ids()).count(owner)
    models = uploaded_models(ctx, owner)
    tenants = request.app.state.tenants
    return Usage(
        tenant=owner,
        image_bytes=Held(held=store.usage.held(owner, IMAGE_BYTES), limit=s.quota_image_bytes),
        job_bytes=Held(held=store.usage.held(owner, JOB_BYTES), limit=s.quota_job_bytes),
        models=Held(held=len(models), limit=s.max_models_per_key),
        model_bytes=Held(held=sum(r.size_bytes for r in models), limit=s.max_model_bytes_per_key),
        datasets=Held(held=datasets.held_by(owner), limit=s.max_datasets_per_key),
        dataset_bytes=Held(held=datasets.bytes_held_by(owner), limit=s.max_dataset_bytes_per_key),
        queued_jobs=Held(held=queued, limit=s.queue_max_length),
        running_jobs=running,
        max_running_jobs=s.max_running_jobs_per_key or None,
        holds=Held(held=tenants.held(owner), limit=s.max_holds_per_key),
        rate_limit_per_s=s.rate_limit_per_s if owner is not None and s.rate_limit_per_s > 0 else None)
