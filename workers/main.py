"""The worker process: `python -m workers` (or `convscope worker`).

Loads torch once, keeps recently used networks (LRU), and runs jobs from the RQ queue in its own
process — an RQ `SimpleWorker`, which never forks, so a CUDA context survives from job to job.
Device: CUDA when torch sees a GPU, else CPU. Any number of workers, on any machines that reach
the same Redis, may serve one queue. Each API key's jobs wait in a queue of their own, and a worker takes
from those queues in turn (`core.jobs.queueing`), finding a new key's queue within `DISCOVER_EVERY_S`.

A heartbeat thread refreshes `P worker:<name>` (the job it runs) every `worker_heartbeat_s` and
looks for other workers' lost jobs every `job_monitor_interval_s` (see `core.jobs.supervisor`).
When Redis goes away the worker backs off (1 s, doubling to 30 s) and reconnects by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time
import uuid

import redis
import torch
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from core import logs
from core.jobs import queueing
from core.jobs.store import JobStore
from core.jobs.supervisor import end_lost_jobs
from core.kinds.dataset import umap_available
from core.redis_client import connect
from core.settings import Settings, get_settings
from core.stores.models import ModelStore
from models.runtimes import Runtimes
from models.sessions import keep_freed_buffers
from workers import execute
from workers.context import WorkerContext
from workers.methods.dataset.embedding import warm_umap
from workers.methods.mechanics import imputation
from workers.networks import NetworkCache

log = logging.getLogger("convscope.worker")
MAX_BACKOFF_S = 30.0
STATS_EVERY_S = 5.0


class Heartbeat(threading.Thread):
    """Says, every `interval_s`, which job this worker runs; also runs the lost-job check."""

    def __init__(self, store: JobStore, name: str, settings: Settings):
        super().__init__(name="heartbeat", daemon=True)
        self.store, self.worker, self.settings = store, name, settings
        self.queue = queueing.queue(store.client, settings.job_queue)
        self.current = "-"
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._last_check = self._last_stats = 0.0
        self.caches = None  # () -> {cache: {figure: number}}, published for the API's /metrics

    def _beat(self) -> None:
        with self._lock:  # never write a stale job id over a newer one
            self.store.workers.beat(self.worker, self.current, self.settings.worker_heartbeat_ttl_s)
        if self.caches is not None and time.monotonic() - self._last_stats >= STATS_EVERY_S:
            self._last_stats = time.monotonic()
            try:
                self.store.workers.publish_stats(self.worker, self.caches(),
                                                 self.settings.worker_heartbeat_ttl_s + STATS_EVERY_S)
            except Exception:  # figures for /metrics never stop a heartbeat or a job
                log.debug("cache figures not published", exc_info=True)

    def running(self, job_id: str) -> None:
        with self._lock:
            self.current = job_id
        self._beat()

    def idle(self) -> None:
        with self._lock:
            self.current = "-"
        try:
            self._beat()
        except redis.RedisError:
            pass

    def run(self) -> None:
        failing = False
        while True:
            try:
                self._beat()
                if time.monotonic() - self._last_check >= self.settings.job_monitor_interval_s:
                    self._last_check = time.monotonic()
                    end_lost_jobs(self.store, self.queue, scale=self.settings.job_time_limit_scale,
                                  stray_after_s=self.settings.worker_heartbeat_ttl_s)
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("heartbeat: Redis is unavailable", extra={"fields": {"error": exc.__class__.__name__}})
                failing = True
            except Exception:
                log.exception("heartbeat: lost-job check failed")
            if self._stop_event.wait(self.settings.worker_heartbeat_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        try:
            self.store.workers.forget(self.worker)
        except redis.RedisError:
            pass


PUBSUB_WAKE_S = 1.0
DISCOVER_EVERY_S = 1  # an idle worker re-reads the tenant queues this often (whole seconds: RQ's BLPOP timeout)


class ConvscopeWorker(SimpleWorker):
    """An RQ SimpleWorker (no fork) that tells its heartbeat which job it is running, whose command channel's
    listener wakes every `PUBSUB_WAKE_S`, and that serves every tenant's queue in turn (`queueing.FairOrder`),
    re-reading the set of them before each dequeue."""

    liveness: Heartbeat
    registry_key: str | None = None  # `P queues:<base>`, the tenant queues (None: only the queues given)

    def serve_tenants(self, base: str, registry_key: str, running_cap: int = 0) -> None:
        """Serve `base` and every tenant queue registered in `registry_key`, skipping a tenant's queue while it has
        `running_cap` jobs running (0: no cap)."""
        self.base_queue, self.registry_key, self.running_cap = base, registry_key, running_cap
        self.fair, self._queue_objects = queueing.FairOrder(), {}

    def discover_queues(self) -> None:
        """Listen to the base queue and every tenant queue under its running cap, in round-robin order after the
        one served last. A queue's running jobs are those in its RQ started registry (every worker's)."""
        names = self.fair.order(queueing.queue_names(self.connection, self.registry_key, self.base_queue))
        for name in names:
            if name not in self._queue_objects:
                self._queue_objects[name] = queueing.queue(self.connection, name)
        if self.running_cap:
            names = [name for name in names if name == self.base_queue or self._queue_objects[name]
                     .started_job_registry.get_job_count(cleanup=False) < self.running_cap]
        self.queues = [self._queue_objects[name] for name in sorted(names)]
        self._ordered_queues = [self._queue_objects[name] for name in names]

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """RQ's dequeue, in slices of `DISCOVER_EVERY_S` with the queues re-read before each, so that a tenant
        that submits its first job while this worker waits is served within a second. RQ's own terms hold: with
        no `timeout` (a burst) one look at every queue and no wait; with `max_idle_time`, None once idle that
        long (s)."""
        if self.registry_key is None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        idle_since = time.monotonic()
        while True:
            self.discover_queues()
            slice_s = None if timeout is None else DISCOVER_EVERY_S  # None: a burst's one look, no wait
            result = super().dequeue_job_and_maintain_ttl(slice_s, max_idle_time=slice_s)
            if result is not None:
                self.fair.served(result[1].name)
                return result
            idle = max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time
            if timeout is None or idle or self._stop_requested:
                return None

    def subscribe(self):
        """RQ's own, but its listener thread sleeps 1 s, not RQ's 60: once unsubscribed, that thread waits out its
        sleep, and redis-py's `stop()` joins it, so a warm shutdown took up to a minute (2 of 5 in a test)."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=PUBSUB_WAKE_S, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def execute_job(self, job, queue):
        self.liveness.running(job.id.rsplit("-", 1)[0])
        try:
            super().execute_job(job, queue)
        finally:
            self.liveness.idle()


def warm_up_in_background() -> threading.Thread:
    """Compile the numba kernels in a daemon thread, so the worker takes jobs at once and a first job does not
    spend its time limit on the JIT: ROAD's imputation (every scored attribution map), then UMAP's (when umap-learn
    is there)."""

    def warm() -> None:
        for name, compile_kernels in (("ROAD imputation", imputation.warm_up),
                                      ("UMAP", warm_umap if umap_available() else None)):
            if compile_kernels is None:
                continue
            start = time.perf_counter()
            try:
                compile_kernels()
            except Exception:
                log.exception(f"{name} warm-up failed; its first job will compile instead")
                continue
            log.info(f"{name} warmed up", extra={"fields": {"s": round(time.perf_counter() - start, 1)}})

    thread = threading.Thread(target=warm, name="numba-warm-up", daemon=True)
    thread.start()
    return thread


def worker_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def serve(settings: Settings, name: str) -> None:
    """Run jobs until asked to stop (SIGTERM/SIGINT: after the current job; twice: at once)."""
    keep_freed_buffers()  # torch's and ONNX Runtime's buffers stay warm from one step to the next (models.sessions)
    if settings.worker_nice:  # jobs are background work: the API's forward views on this machine go first
        os.nice(settings.worker_nice)
    torch.set_num_threads(settings.worker_torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    client = connect(settings.redis_url)
    store = JobStore(client, settings.redis_prefix, settings.artifact_ttl_s)
    models = ModelStore.open(settings)  # the data folder, or the bucket with this machine's blob cache
    execute.install(WorkerContext(settings, store, models,
                                  NetworkCache(models, device, settings.worker_cached_networks,
                                               settings.worker_network_cache_bytes), name,
                                  Runtimes(models, settings, budget_bytes=settings.worker_session_cache_bytes,
                                           intra_threads=settings.worker_torch_threads)))
    heartbeat = Heartbeat(store, name, settings)
    heartbeat.caches = lambda: cache_figures(execute_context())
    heartbeat.start()
    if settings.worker_warm_up:
        warm_up_in_background()
    log.info("worker ready", extra={"fields": {"name": name, "queue": settings.job_queue, "device": str(device),
                                              "torch_threads": settings.worker_torch_threads}})
    backoff = 1.0
    try:
        while True:
            rq_client = connect(settings.redis_url)  # its own client: RQ lengthens its socket timeout
            worker = ConvscopeWorker([queueing.queue(rq_client, settings.job_queue)], connection=rq_client,
                                     name=f"{name}.{uuid.uuid4().hex[:4]}", serializer=JSONSerializer,
                                     job_class=queueing.SafeJob, worker_ttl=60, maintenance_interval=60)
            worker.liveness = heartbeat
            worker.serve_tenants(settings.job_queue, store.keys.queues(settings.job_queue),
                                 settings.max_running_jobs_per_key)
            try:
                worker.work(logging_level=settings.log_level)
            except redis.RedisError as exc:
                log.warning("worker lost Redis", extra={"fields": {"error": exc.__class__.__name__}})
            if worker._stop_requested or worker._shutdown_requested_date:
                break
            log.warning("worker loop ended; reconnecting", extra={"fields": {"in_s": backoff}})
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            if _redis_answers(client):
                backoff = 1.0
    except StopRequested:
        pass
    finally:
        heartbeat.stop()


def execute_context() -> WorkerContext:
    return execute._context


def cache_figures(ctx: WorkerContext) -> dict:
    """What the worker's caches hold (bytes, entries, evictions), for the API's /metrics."""
    sessions = ctx.runtimes.sessions.stats()
    blobs = ctx.models.blobs
    return {"networks": {"bytes": ctx.networks.held_bytes(), "count": len(ctx.networks),
                         "evictions": ctx.networks.evictions, "budget_bytes": ctx.networks.budget_bytes},
            "sessions": {"bytes": sessions["bytes"], "count": sessions["sessions"], "evictions": sessions["evictions"],
                         "budget_bytes": ctx.runtimes.sessions.budget_bytes},
            "blobs": {"bytes": blobs.held_bytes() if ctx.models.storage.remote else 0, "fetches": blobs.fetches,
                      "corrupt": blobs.corrupt, "evictions": blobs.evictions}}


def _redis_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="convscope worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=None, help="worker name (default host.pid.random)")
    args = parser.parse_args(argv)
    settings = get_settings()
    logs.setup(settings.log_level)
    serve(settings, args.name or worker_name())
