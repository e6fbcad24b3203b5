"""The FastAPI application: lifespan, middleware (request id, logs, metrics, load shedding), errors."""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import logs, render
from core.errors import ConvscopeError, error_body
from core.images import InputCache
from core.jobs.store import JobStore
from core.redis_client import connect, redis_errors_around
from core.settings import Settings, get_settings
from core.stores.images import ImageStore
from core.stores.models import ModelStore
from models.runtimes import Runtimes, run_slots
from models.warm import RecentSessions, Warmer
from service import docs_pages, explorer, openapi_docs
from service.auth import Authenticator, parse_keys, require_key
from service.context import AppContext
from service.cors import install_cors, parse_origins
from service.hosts import LocalOnly, host_names
from service.jobs import JobService, monitor
from service.lanes import Lanes
from service.middleware import Admission, Observe
from service.routes import access, health, images, job_events, jobs, models, units, usage, views
from service.routes import datasets as dataset_routes
from service.tenants import Tenants

log = logging.getLogger("convscope")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        logs.setup(settings.log_level)
        client = connect(settings.redis_url)
        # Uploads and deletes of the same bytes take one lock per digest in Redis, shared by every API process.
        locks = JobStore(client, settings.redis_prefix, settings.artifact_ttl_s)
        store = ModelStore.open(settings, lock=lambda digest: redis_errors_around(locks.lock(f"modelblob:{digest}")))
        recent = RecentSessions(client, settings.redis_prefix, keep=settings.warm_sessions)
        runtimes = Runtimes(store, settings, batch_rows=settings.forward_batch_max,
                            batch_wait_s=settings.forward_batch_wait_ms / 1000, batch_instances=run_slots(settings),
                            background=True, used=recent, time_limit_s=settings.forward_time_limit_s,
                            coming=app.state.admission.coming)
        recent.submit = runtimes.background.submit
        # Sessions warm on a background thread: /healthz answers at once, /readyz once the built-in model's is warm.
        warmer = Warmer(runtimes, store, recent, prepare=first_request_imports)
        warmer.start()
        app.state.ctx = AppContext(settings=settings, redis=client, models=store,
                                   images=ImageStore(client, settings.redis_prefix, settings.image_ttl_s,
                                                     settings.image_lease_s, quota_bytes=settings.quota_image_bytes),
                                   runtimes=runtimes, inputs=InputCache(), warmer=warmer,
                                   lanes=Lanes(forward_views_at_once(settings), settings.forward_beyond_share_nice))
        log.info("convscope API ready", extra={"fields": {"storage": store.storage.url,
                                                         "data_dir": str(settings.data_dir)}})
        if app.state.auth.open:
            log.warning("no API keys configured: the service is open to anyone who can reach it; "
                        "it should listen on 127.0.0.1 only")
        else:
            log.info("API keys configured", extra={"fields": {"tenants": sorted({k.tenant for k in app.state.auth.keys})}})
        app.state.jobs = JobService(settings, client, app.state.ctx.images)
        app.state.tenants.connect(app.state.jobs.store.aclient)  # the per-key rate limit, on the asyncio client
        watcher = asyncio.create_task(monitor(app.state.jobs, settings.job_monitor_interval_s))
        yield
        watcher.cancel()
        await app.state.jobs.close()
        runtimes.close()
        app.state.ctx.lanes.close()
        client.close()

    app = FastAPI(title="convscope", version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Shows what a convolutional network sees and learns.")
    app.state.auth = Authenticator(parse_keys(settings.api_keys, settings.api_keys_file))
    app.state.tenants = Tenants(settings)  # per-key rate limit and holds (service/tenants.py)
    # The process's caps on work done at once: model uploads analysed, image previews encoded (each a thread), and
    # dataset uploads decoded (each in a pool thread; the rest wait on the event loop without one).
    app.state.upload_slots = threading.BoundedSemaphore(settings.max_concurrent_uploads)
    app.state.preview_slots = threading.BoundedSemaphore(settings.max_concurrent_previews)
    app.state.dataset_slots = asyncio.Semaphore(settings.max_concurrent_dataset_decodes)
    # Routes are matched in the order included: the forward views, the calls made most often, first (about 30 µs
    # less routing a request than after the images and models routes).
    for router in (views.router, images.router, models.router, units.router, jobs.router, usage.router):
        app.include_router(router, dependencies=[Depends(require_key)])
    app.include_router(health.router)
    app.include_router(access.router)  # public: whether a key is needed, asked before any keyed call
    app.include_router(docs_pages.router)  # /docs and /redoc with their assets served here, not from a CDN
    app.include_router(explorer.router)  # /ui/: static files only; the page calls the public /v1 API
    app.include_router(dataset_routes.router, dependencies=[Depends(require_key)])
    app.include_router(job_events.router)  # the API key, or the job's events token (service/events_token.py)
    install_error_handlers(app)
    install_middleware(app, settings)
    origins = parse_origins(settings.cors_origins, keyed=not app.state.auth.open)
    if app.state.auth.open:  # no keys: answer only this machine's host names and pages (service/hosts.py)
        app.add_middleware(LocalOnly, hosts=host_names(settings.allowed_hosts), origins=frozenset(origins))
    install_cors(app, origins)  # last: the outermost middleware
    app.openapi = lambda: openapi_schema(app)
    return app


def first_request_imports() -> None:
    """What the first forward views would otherwise pay on the event loop: matplotlib's import (a noticeable
    fraction of a second, stalling every request in flight) behind the colour maps requests are checked against;
    and what the first feature-map PNG would pay: the encoder's deflating threads and the grid's palette."""
    for name in ("inferno", "jet"):
        render.lut(name)
    render.feature_grid_png(np.zeros((512, 14, 14), np.float32))  # large enough to deflate in parts


def openapi_schema(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        app.openapi_schema = openapi_docs.add_components(schema)
    return app.openapi_schema


def install_error_handlers(app: FastAPI) -> None:
    def respond(status: int, body: dict, retry_after: int | None = None) -> JSONResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ConvscopeError)
    async def convscope_error(request: Request, exc: ConvscopeError):
        return respond(exc.status, exc.body(), exc.retry_after or (5 if exc.status in (429, 503) else None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        first = errors[0] if errors else {"msg": "invalid request", "loc": []}
        return respond(422, error_body("validation_error", f"invalid request: {first['msg']}", errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return respond(exc.status_code, error_body(code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return respond(500, error_body("internal", "an internal error occurred; it has been logged",
                                       {"request_id": logs.request_id.get()}))


def forward_views_at_once(settings: Settings) -> int:
    """`max_concurrent_requests`, or by default the forward runs that go at once: each view admitted beyond them
    waits for its batch on a thread of its own, and those threads take the interpreter from the running ones
    (`bench/admission.py`); the others wait in admission's lines, which cost no thread."""
    return settings.max_concurrent_requests or run_slots(settings)


def install_middleware(app: FastAPI, settings: Settings) -> None:
    admission = Admission(forward_views_at_once(settings), settings.max_queued_requests,
                          settings.max_queue_wait_ms / 1000, body_bytes=settings.max_body_bytes,
                          share=settings.forward_share_per_key, run_slots=run_slots(settings),
                          linger_s=settings.forward_share_linger_ms / 1000)
    app.state.admission = admission  # its views admitted tell a forward run whether it runs alone
    app.add_middleware(Observe, admission=admission)
