"""The job system as the API sees it: submit, read, list, cancel, wait, stream events, artifacts.

Torch-free. A submitted spec is checked completely before anything is queued (params against the
kind's model, then against the model record; the image is decoded under the usual limits), the
image file is kept in Redis by content hash, and RQ gets `run_job(job_id, attempt)` on the owner's own queue
(`queueing.tenant_queue`: workers serve the keys' queues in turn, and `queue_max_length` holds per key).
A spec identical to an earlier finished one — same model file, same image bytes, same params,
same owner — is answered at once from that job's stored result (`cached: true`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import redis
import redis.asyncio
from fastapi.concurrency import run_in_threadpool

from core.errors import Invalid, NotFound, NotReady, Overloaded
from core.jobs import queueing
from core.jobs.record import JobRecord, JobSpec
from core.jobs.status import JobStatus, media_type
from core.jobs.store import JobStore
from core.jobs.supervisor import check_job, end_lost_jobs, time_limit
from core.kinds.registry import KINDS
from core.model_record import ModelRecord
from core.redis_client import redis_errors
from core.settings import Settings
from core.stores.images import ImageStore
from core.stores.usage import JOB_BYTES
from service.events_token import EventsTokens
from service.job_inputs import ACCEPTORS, Submission
from service.job_schemas import ArtifactRef, Job, JobError, JobResult, JobTiming, Progress
from service.metrics import JOB_SECONDS, QUEUE_DEPTH

log = logging.getLogger("convscope.jobs")
MAX_WAIT_S = 60.0
KEEPALIVE_S = 15.0


def _when(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds is not None else None


def view(record: JobRecord, events_token: str | None = None) -> Job:
    """The client's view of a stored record (artifact URLs included; the events token when given)."""
    result = None
    if record.result is not None:
        result = JobResult(metrics=record.result.metrics, artifacts=[
            ArtifactRef(name=name, media_type=media_type(name), url=f"/v1/jobs/{record.id}/artifacts/{name}")
            for name in record.result.artifacts])
    error = JobError(**record.error.model_dump()) if record.error is not None else None
    return Job(timing=timing_of(record), id=record.id, kind=record.spec.kind, model=record.spec.model, status=record.status,
               params=record.spec.params, inputs=dict(record.spec.inputs),
               progress=Progress(**record.progress.model_dump()),
               created_at=_when(record.created_at), started_at=_when(record.started_at),
               ended_at=_when(record.ended_at), cached=record.cached, error=error, result=result,
               events_token=events_token)


def timing_of(record: JobRecord) -> JobTiming:
    """The record's time split in ms (`JobTiming`): queued from its times; the worker's stages once finished."""
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    queued = record.started_at - record.created_at if record.started_at is not None else None
    total = record.ended_at - record.created_at if record.ended_at is not None else None
    stages = record.stages
    if stages is None or record.started_at is None or record.ended_at is None:
        return JobTiming(queued=ms(queued), total=ms(total))
    ran = record.ended_at - record.started_at
    stored = max(0.0, ran - stages.inputs - stages.method - stages.scoring)  # encoding, and storing until the end
    return JobTiming(queued=ms(queued), started=ms(stages.inputs), method=ms(stages.method),
                     scoring=ms(stages.scoring), stored=ms(stored), total=ms(total))


class JobService:
    """Everything `service/routes/jobs.py` does, on one sync and one asyncio Redis client."""

    def __init__(self, settings: Settings, client: redis.Redis, image_store: ImageStore):
        self.settings = settings
        aclient = redis.asyncio.Redis.from_url(settings.redis_url, socket_connect_timeout=2,
                                               socket_timeout=KEEPALIVE_S + 10, health_check_interval=15)
        self.store = JobStore(client, settings.redis_prefix, settings.artifact_ttl_s, aclient=aclient)
        self.queue = queueing.queue(client, settings.job_queue)
        self._queues = {settings.job_queue: self.queue}
        self.images = image_store
        self.tokens = EventsTokens(settings, client)
        self._ended_cursor: str | None = None

    async def close(self) -> None:
        await self.store.close_async()

    def queue_of(self, owner: str | None):
        """The RQ queue `owner`'s jobs wait in (one per key, so that workers can serve the keys in turn)."""
        return self.queue_of_name(queueing.tenant_queue(self.settings.job_queue, owner))

    # Submitting.
    def submit(self, request, record: ModelRecord, files: dict[str, bytes], owner: str | None) -> Job:
        kind = KINDS[request.kind]
        try:
            params = request.params.resolve(record)
        except ValueError as exc:
            raise Invalid(f"invalid params for {kind.name}: {exc}", code="invalid_params") from None
        accepted = {read.name: ACCEPTORS[read.source](Submission(
            read.name, getattr(request, read.name), files.get(read.name), owner, self.settings, self.images))
            for read in kind.reads if read.required or getattr(request, read.name) is not None or read.name in files}
        spec = JobSpec(kind=kind.name, model=record.id, model_sha256=record.onnx_sha256,
                       inputs={name: given.ref for name, given in accepted.items()},
                       params=params.model_dump(mode="json"), owner=owner, retry=request.retry,
                       queue=queueing.tenant_queue(self.settings.job_queue, owner),
                       time_limit_s=time_limit(kind.name, self.settings.job_time_limit_scale)).sealed()
        job_id = uuid.uuid4().hex
        queue = self.queue_of_name(spec.queue)
        usage, quota = self.store.usage, self.settings.quota_job_bytes
        usage.check(owner, JOB_BYTES, quota)  # inputs and artifacts the key holds (core/stores/usage.py)
        with redis_errors():
            with self.store.client.pipeline(transaction=False) as pipe:  # one round trip
                self.store.files.cached(spec.digest, pipe=pipe)
                pipe.llen(queue.key)
                source_id, depth = pipe.execute()
            hit = self._from_cache(job_id, spec, source_id.decode() if source_id else None)
            if hit is not None:
                return hit
            if depth >= self.settings.queue_max_length:
                raise Overloaded(f"this key's job queue is full ({depth} jobs waiting); retry later", code="queue_full",
                                 retry_after=self.settings.queue_retry_after_s,
                                 details={"queued": depth, "limit": self.settings.queue_max_length})
            charged = []  # input files, charged to the key before they are written; refunded if that fails
            try:
                for given in accepted.values():
                    if given.blob is not None:
                        usage.charge(owner, JOB_BYTES, f"in:{given.ref}", len(given.blob) + len(given.decoded or b""),
                                     self.settings.artifact_ttl_s, quota)
                        charged.append(f"in:{given.ref}")
                created = self._enqueue(job_id, spec, accepted, queue)
            except BaseException:
                for item in charged:
                    usage.refund(owner, JOB_BYTES, item)
                raise
            return self._owned(created)

    def _enqueue(self, job_id: str, spec: JobSpec, accepted: dict, queue) -> JobRecord:
        """Inputs, record and queue entry: one atomic round trip."""
        with redis_errors():
            with self.store.client.pipeline() as pipe:
                pipe.multi()  # explicitly, as RQ expects of a pipeline it is given
                for given in accepted.values():
                    if given.blob is not None:
                        self.store.files.put_input(given.ref, given.blob, given.decoded, pipe=pipe)
                created = self.store.records.create(job_id, spec, listed_max=self.settings.jobs_listed_max, pipe=pipe)
                queueing.enqueue(queue, job_id, 1, time_limit_s=spec.time_limit_s,
                                 ttl_s=self.settings.artifact_ttl_s, pipe=pipe)
                if queue is not self.queue:
                    pipe.sadd(self.store.keys.queues(self.settings.job_queue), queue.name)
                pipe.execute()
        return created

    def _owned(self, record: JobRecord) -> Job:
        """The owner's view of a job: the record and a fresh events token."""
        return view(record, self.tokens.issue(record.id, record.owner))

    def _from_cache(self, job_id: str, spec: JobSpec, source_id: str | None) -> Job | None:
        source = self.store.records.get(source_id) if source_id else None
        if (source is None or source.status != JobStatus.FINISHED
                or not self.store.files.copy_artifacts(source_id, job_id)):
            return None
        now = repr(time.time())
        record = self.store.records.create(job_id, spec, status=JobStatus.FINISHED,
                                           listed_max=self.settings.jobs_listed_max, extra={
            "cached": "1", "result": source.result, "progress": source.progress, "started_at": now, "ended_at": now})
        self.store.events.append(job_id, "end", {"status": JobStatus.FINISHED})
        self.store.files.charge_artifacts(job_id, spec.owner)  # the copy counts against the key's quota too
        return self._owned(record)

    # Reading.
    def record(self, job_id: str, owner: str | None) -> JobRecord:
        """The stored record of a job the caller owns (404 otherwise); a lost job is ended first."""
        with redis_errors():
            record = self.store.records.get(job_id) if len(job_id) <= 64 else None
            if record is None or record.owner != owner:
                raise NotFound(f"no job with id {job_id!r} (it may have expired)", code="job_not_found")
            if record.status == JobStatus.STARTED and check_job(self.store, self.queue, job_id, record,
                                                                scale=self.settings.job_time_limit_scale):
                record = self.store.records.get(job_id) or record
        return record

    def get(self, job_id: str, owner: str | None) -> Job:
        return self._owned(self.record(job_id, owner))

    def list(self, owner: str | None, status: JobStatus | None, kind: str | None, limit: int) -> list[Job]:
        with redis_errors():
            found = []
            for record in self.store.records.newest(owner):
                if status and record.status != status:
                    continue
                if kind and record.spec.kind != kind:
                    continue
                found.append(self._owned(record))
                if len(found) >= limit:
                    break
        return found

    async def artifact(self, job_id: str, name: str, owner: str | None) -> tuple[bytes, str]:
        """An artifact of a job the caller owns: once the job has finished, or before, when the worker published it
        early (`JobStore.publish`: a map while its scores are computed). Record and bytes in one round trip on the
        event loop (a started job goes through `record`, which ends it first if it is lost)."""
        with redis_errors():
            record, data = (await self.store.records.get_with_artifact_async(job_id, name) if len(job_id) <= 64
                            else (None, None))
        if record is not None and record.status == JobStatus.STARTED:
            record = await run_in_threadpool(self.record, job_id, owner)
        if record is None or record.owner != owner:
            raise NotFound(f"no job with id {job_id!r} (it may have expired)", code="job_not_found")
        ready = record.ready
        if not record.ended and name not in ready:
            raise NotReady(f"job {job_id} is {record.status}; artifacts exist once it has finished"
                           + (f" (readable now: {', '.join(ready)})" if ready else ""), code="job_not_finished",
                           details={"ready": ready})
        names = record.result.artifacts if record.result is not None else ready
        if name not in names:
            raise NotFound(f"job {job_id} has no artifact {name!r}", code="artifact_not_found",
                           details={"artifacts": names})
        if data is None and name in ready:  # published after the first read
            data = await run_in_threadpool(self.store.files.artifact, job_id, name)
        if data is None:
            raise NotFound(f"the artifacts of job {job_id} have expired", code="artifact_expired")
        return data, media_type(name)

    # Cancelling.
    def cancel(self, job_id: str, owner: str | None) -> Job:
        """Queued: cancelled now. Started: asked to stop at its next step (the Job still says started).
        Already ended as canceled: returned as is. Finished or failed: 409."""
        record = self.record(job_id, owner)
        records = self.store.records
        with redis_errors():
            changed, before = records.transition(job_id, (JobStatus.QUEUED,), JobStatus.CANCELED)
            if changed:
                queueing.remove_queued(self.queue_of_name(record.spec.queue or self.settings.job_queue), job_id,
                                       record.attempt)
            elif before == JobStatus.STARTED:
                records.request_cancel(job_id)
            elif before in (JobStatus.FINISHED, JobStatus.FAILED):
                raise NotReady(f"job {job_id} has already ended as {before}", code="job_ended")
            return self._owned(records.get(job_id) or record)

    # Waiting and streaming.
    async def wait(self, job_id: str, seconds: float) -> JobRecord | None:
        """Hold until the job ends or `seconds` pass; returns the record as it then is."""
        deadline = time.monotonic() + min(seconds, MAX_WAIT_S)
        cursor = "0-0"
        records = self.store.records
        with redis_errors():
            while (left := deadline - time.monotonic()) > 0:
                for entry_id, event, _ in await self.store.events.read_async(job_id, cursor, min(left, 5.0)):
                    cursor = entry_id
                    if event == "end":
                        return await records.get_async(job_id)
                record = await records.get_async(job_id)
                if record is None or record.ended:
                    return record
            return await records.get_async(job_id)

    async def events(self, job_id: str, last_event_id: str | None) -> AsyncIterator[str]:
        """Server-sent events: the job's `progress` (and `preview`) events, then one `end` carrying the Job."""
        cursor = last_event_id or "0-0"
        try:
            while True:
                entries = await self.store.events.read_async(job_id, cursor, KEEPALIVE_S)
                if not entries:
                    record = await self.store.records.get_async(job_id)
                    if record is None or (record.ended and not await self.store.events.exist_async(job_id)):
                        if record is not None:
                            yield _sse("end", view(record).model_dump_json())
                        return
                    yield ": keep-alive\n\n"
                    continue
                for entry_id, event, data in entries:
                    cursor = entry_id
                    if event == "end":
                        record = await self.store.records.get_async(job_id)
                        yield _sse("end", view(record).model_dump_json() if record else data, cursor)
                        return
                    yield _sse(event, data, cursor)
        except (TimeoutError, redis.ConnectionError, redis.TimeoutError):
            log.warning("event stream ended: Redis is unavailable", extra={"fields": {"job": job_id}})

    # Background duties of the API process.
    def monitor_once(self) -> None:
        """End lost jobs (started or queued: `core.jobs.supervisor`), refresh the queue-depth gauge, observe
        durations of jobs that ended."""
        end_lost_jobs(self.store, self.queue, scale=self.settings.job_time_limit_scale,
                      stray_after_s=self.settings.worker_heartbeat_ttl_s)
        QUEUE_DEPTH.set(self.queued_total())
        if self._ended_cursor is None:
            self._ended_cursor = self.store.workers.ended_cursor()
            return
        self._ended_cursor, ended = self.store.workers.ended_since(self._ended_cursor)
        for kind, status, seconds in ended:
            if status == JobStatus.FINISHED:
                JOB_SECONDS.labels(kind).observe(seconds)


    def queued_total(self) -> int:
        """Jobs waiting in every key's queue."""
        names = queueing.queue_names(self.store.client, self.store.keys.queues(self.settings.job_queue),
                                     self.settings.job_queue)
        with self.store.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(self.queue_of_name(name).key)
            return sum(pipe.execute())

    def queue_of_name(self, name: str):
        """The RQ queue named `name`, made once."""
        if name not in self._queues:
            self._queues[name] = queueing.queue(self.store.client, name)
        return self._queues[name]


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def monitor(service: JobService, interval_s: float) -> None:
    """The API's background loop: `monitor_once` every `interval_s`, quietly surviving Redis outages."""
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            await run_in_threadpool(service.monitor_once)
            failing = False
        except redis.RedisError as exc:
            if not failing:
                log.warning("job monitor: Redis is unavailable", extra={"fields": {"error": exc.__class__.__name__}})
            failing = True
        except Exception:  # the loop must outlive any one bad record
            log.exception("job monitor failed")
