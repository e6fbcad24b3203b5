"""`Client` and `AsyncClient`: one method per operation of the API, typed results, jobs followed to their end.

    with Client("http://127.0.0.1:8000", api_key=None) as client:
        client.predict("efficientnet-lite0", "cat.jpg", top_k=3)[0].label
        job = client.run("gradcam", "efficientnet-lite0", "cat.jpg", on_progress=print)
        heatmap = job.artifact("heatmap.png")

Each method is one line over `calls.py`, which says what is sent and how the answer is read; `transport.py`
sends it (key, retries, errors). Methods that return Jobs hand out `Job` (or `AsyncJob`) bound to the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, closing
from pathlib import Path
from typing import Any

import httpx

from convscope_client import calls
from convscope_client import models as m
from convscope_client.calls import Call, Format
from convscope_client.errors import ConvscopeError, JobFailed
from convscope_client.events import RECONNECTS, Event, Follower, ProgressCallback, SSEParser
from convscope_client.images import ImageInput
from convscope_client.transport import RetryPolicy, send, send_async

DEFAULT_TIMEOUT_S = 60.0
EVENTS_READ_TIMEOUT_S = 60.0  # the service sends a keep-alive every 15 s on a quiet stream


class _Base:
    job_model: type[m.Job] = m.Job

    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, max_retry_wait_s: float):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout)
        self.events_timeout = httpx.Timeout(timeout, read=max(timeout, EVENTS_READ_TIMEOUT_S))
        self.policy = RetryPolicy(retries, max_retry_wait_s)

    def _result(self, call: Call, response: httpx.Response) -> Any:
        if call.job == "one":
            return self._bind(self.job_model.model_validate_json(response.content))
        if call.job == "list":
            return [self._bind(self.job_model.model_validate(job)) for job in response.json()["jobs"]]
        return call.read(response) if call.read else None

    def _bind(self, job: m.Job) -> m.Job:
        job._client = self
        return job

    def _ended(self, job: m.Job) -> m.Job:
        if job.status != "finished":
            raise JobFailed(job)
        return job


class Client(_Base):
    """The convscope API over HTTP. `timeout` in seconds per request; 429/503 retried `retries` times."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retries: int = 3, max_retry_wait_s: float = 30.0):
        super().__init__(base_url, api_key, timeout, retries, max_retry_wait_s)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _do(self, call: Call) -> Any:
        return self._result(call, send(self.http, call, self.policy))

    # Service
    def health(self) -> bool:
        return self._do(calls.health())

    def ready(self) -> bool:
        return self._do(calls.ready())

    def metrics(self) -> str:
        return self._do(calls.metrics())

    def auth(self) -> m.AuthStatus:
        return self._do(calls.auth())

    def usage(self) -> m.Usage:
        return self._do(calls.usage())

    # Models
    def models(self) -> list[m.ModelInfo]:
        return self._do(calls.models())

    def model(self, model: str) -> m.ModelInfo:
        return self._do(calls.model(model))

    def upload_model(self, path: str | Path, name: str | None = None, labels: Any = None,
                     preprocess: dict | None = None) -> m.ModelInfo:
        return self._do(calls.upload_model(path, name, labels, preprocess))

    def delete_model(self, model: str) -> None:
        return self._do(calls.delete_model(model))

    def filters(self, model: str, layer: str, format: str = "png") -> bytes:
        return self._do(calls.filters(model, layer, format))

    def circuit(self, model: str, layer: str, channel: int, k: int = 8, source: str | None = None,
                format: str = "json") -> m.Circuit | bytes:
        return self._do(calls.circuit(model, layer, channel, k, source, format))

    # Forward views
    def predict(self, model: str, image: ImageInput, top_k: int = 5) -> list[m.Prediction]:
        return self._do(calls.predict(model, image, top_k))

    def activations(self, model: str, image: ImageInput, layer: str, format: Format = "png",
                    **spec: Any) -> m.ActivationsResponse | bytes:
        return self._do(calls.activations(model, image, layer, format, **spec))

    def occlusion(self, model: str, image: ImageInput, format: Format = "png", **spec: Any) -> m.OcclusionResponse | bytes:
        return self._do(calls.occlusion(model, image, format, **spec))

    # Images and datasets
    def upload_image(self, image: ImageInput) -> m.ImageInfo:
        return self._do(calls.upload_image(image))

    def image(self, image_id: str) -> bytes:
        return self._do(calls.image(image_id))

    def upload_dataset(self, source: Any, name: str | None = None) -> m.DatasetCreated:
        return self._do(calls.upload_dataset(source, name))

    def datasets(self) -> list[m.DatasetSummary]:
        return self._do(calls.datasets())

    def dataset(self, dataset_id: str) -> m.DatasetInfo:
        return self._do(calls.dataset(dataset_id))

    def dataset_image(self, dataset_id: str, index: int, size: int | None = None) -> bytes:
        return self._do(calls.dataset_image(dataset_id, index, size))

    def delete_dataset(self, dataset_id: str) -> None:
        return self._do(calls.delete_dataset(dataset_id))

    # Jobs
    def submit(self, kind: str, model: str, image: ImageInput | None = None, *, style_image: ImageInput | None = None,
               dataset: str | None = None, params: dict | None = None, retry: bool = False, wait: float = 0) -> m.Job:
        """Queue a job (`wait`: seconds the service may hold the answer until the job ends, at most 60)."""
        return self._do(calls.submit(kind, model, image, style_image=style_image, dataset=dataset, params=params,
                                     retry=retry, wait=wait))

    def job(self, job_id: str) -> m.Job:
        return self._do(calls.job(job_id))

    def jobs(self, status: str | None = None, kind: str | None = None, limit: int | None = None) -> list[m.Job]:
        return self._do(calls.jobs(status, kind, limit))

    def cancel(self, job_id: str) -> m.Job:
        return self._do(calls.cancel(job_id))

    def artifact(self, job_id: str, name: str) -> bytes:
        return self._do(calls.artifact(job_id, name))

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events as they come, until its `end` (or until the stream closes)."""
        response = send(self.http, calls.events(job_id, last_event_id), self.policy, stream=True,
                        timeout=self.events_timeout)
        try:
            parser = SSEParser()
            for line in response.iter_lines():
                yield from parser.feed(line)
        finally:
            response.close()

    def wait(self, job_id: str, on_progress: ProgressCallback | None = None) -> m.Job:
        """Follow the job's events to its end: the finished Job, or `JobFailed` when it failed or was canceled."""
        follower = Follower(on_progress)
        for _ in range(RECONNECTS):
            with closing(self.events(job_id, follower.last_id)) as events:
                for event in events:
                    ended = follower.see(event)
                    if ended is not None:
                        return self._ended(self._bind(self.job_model.model_validate(ended)))
        job = self.job(job_id)  # the stream kept closing early (the service lost Redis): ask the job itself
        if job.ended:
            return self._ended(job)
        raise ConvscopeError(None, "events_ended", f"the event stream of job {job_id} kept closing before the job ended")

    def run(self, kind: str, model: str, image: ImageInput | None = None, *,
            on_progress: ProgressCallback | None = None, **spec: Any) -> m.Job:
        """`submit` (same arguments) and `wait`: the finished Job; `JobFailed` (a ConvscopeError) when it fails."""
        job = self.submit(kind, model, image, **spec)
        if not job.ended:
            return self.wait(job.id, on_progress)
        Follower(on_progress).progress(job.progress.step, job.progress.total)  # answered from the result cache
        return self._ended(job)


class AsyncClient(_Base):
    """`Client`'s methods, awaitable (httpx.AsyncClient underneath); its Jobs are `AsyncJob`s."""

    job_model = m.AsyncJob

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retries: int = 3, max_retry_wait_s: float = 30.0):
        super().__init__(base_url, api_key, timeout, retries, max_retry_wait_s)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _do(self, call: Call) -> Any:
        return self._result(call, await send_async(self.http, call, self.policy))

    # Service
    async def health(self) -> bool:
        return await self._do(calls.health())

    async def ready(self) -> bool:
        return await self._do(calls.ready())

    async def metrics(self) -> str:
        return await self._do(calls.metrics())

    async def auth(self) -> m.AuthStatus:
        return await self._do(calls.auth())

    async def usage(self) -> m.Usage:
        return await self._do(calls.usage())

    # Models
    async def models(self) -> list[m.ModelInfo]:
        return await self._do(calls.models())

    async def model(self, model: str) -> m.ModelInfo:
        return await self._do(calls.model(model))

    async def upload_model(self, path: str | Path, name: str | None = None, labels: Any = None,
                           preprocess: dict | None = None) -> m.ModelInfo:
        return await self._do(calls.upload_model(path, name, labels, preprocess))

    async def delete_model(self, model: str) -> None:
        return await self._do(calls.delete_model(model))

    async def filters(self, model: str, layer: str, format: str = "png") -> bytes:
        return await self._do(calls.filters(model, layer, format))

    async def circuit(self, model: str, layer: str, channel: int, k: int = 8, source: str | None = None,
                      format: str = "json") -> m.Circuit | bytes:
        return await self._do(calls.circuit(model, layer, channel, k, source, format))

    # Forward views
    async def predict(self, model: str, image: ImageInput, top_k: int = 5) -> list[m.Prediction]:
        return await self._do(calls.predict(model, image, top_k))

    async def activations(self, model: str, image: ImageInput, layer: str, format: Format = "png",
                          **spec: Any) -> m.ActivationsResponse | bytes:
        return await self._do(calls.activations(model, image, layer, format, **spec))

    async def occlusion(self, model: str, image: ImageInput, format: Format = "png",
                        **spec: Any) -> m.OcclusionResponse | bytes:
        return await self._do(calls.occlusion(model, image, format, **spec))

    # Images and datasets
    async def upload_image(self, image: ImageInput) -> m.ImageInfo:
        return await self._do(calls.upload_image(image))

    async def image(self, image_id: str) -> bytes:
        return await self._do(calls.image(image_id))

    async def upload_dataset(self, source: Any, name: str | None = None) -> m.DatasetCreated:
        return await self._do(calls.upload_dataset(source, name))

    async def datasets(self) -> list[m.DatasetSummary]:
        return await self._do(calls.datasets())

    async def dataset(self, dataset_id: str) -> m.DatasetInfo:
        return await self._do(calls.dataset(dataset_id))

    async def dataset_image(self, dataset_id: str, index: int, size: int | None = None) -> bytes:
        return await self._do(calls.dataset_image(dataset_id, index, size))

    async def delete_dataset(self, dataset_id: str) -> None:
        return await self._do(calls.delete_dataset(dataset_id))

    # Jobs
    async def submit(self, kind: str, model: str, image: ImageInput | None = None, *,
                     style_image: ImageInput | None = None, dataset: str | None = None, params: dict | None = None,
                     retry: bool = False, wait: float = 0) -> m.AsyncJob:
        return await self._do(calls.submit(kind, model, image, style_image=style_image, dataset=dataset, params=params,
                                           retry=retry, wait=wait))

    async def job(self, job_id: str) -> m.AsyncJob:
        return await self._do(calls.job(job_id))

    async def jobs(self, status: str | None = None, kind: str | None = None,
                   limit: int | None = None) -> list[m.AsyncJob]:
        return await self._do(calls.jobs(status, kind, limit))

    async def cancel(self, job_id: str) -> m.AsyncJob:
        return await self._do(calls.cancel(job_id))

    async def artifact(self, job_id: str, name: str) -> bytes:
        return await self._do(calls.artifact(job_id, name))

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        response = await send_async(self.http, calls.events(job_id, last_event_id), self.policy, stream=True,
                                    timeout=self.events_timeout)
        try:
            parser = SSEParser()
            async for line in response.aiter_lines():
                for event in parser.feed(line):
                    yield event
        finally:
            await response.aclose()

    async def wait(self, job_id: str, on_progress: ProgressCallback | None = None) -> m.AsyncJob:
        follower = Follower(on_progress)
        for _ in range(RECONNECTS):
            async with aclosing(self.events(job_id, follower.last_id)) as events:
                async for event in events:
                    ended = follower.see(event)
                    if ended is not None:
                        return self._ended(self._bind(self.job_model.model_validate(ended)))
        job = await self.job(job_id)
        if job.ended:
            return self._ended(job)
        raise ConvscopeError(None, "events_ended", f"the event stream of job {job_id} kept closing before the job ended")

    async def run(self, kind: str, model: str, image: ImageInput | None = None, *,
                  on_progress: ProgressCallback | None = None, **spec: Any) -> m.AsyncJob:
        job = await self.submit(kind, model, image, **spec)
        if not job.ended:
            return await self.wait(job.id, on_progress)
        Follower(on_progress).progress(job.progress.step, job.progress.total)
        return self._ended(job)
