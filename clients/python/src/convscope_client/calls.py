"""Every operation of the API as a `Call`: what to send and how to read the answer, with no I/O.

`Client` and `AsyncClient` each send a Call their own way (`transport.py`) and read it with the same parser, so
the two clients cannot drift apart; each of their methods is one line over a function here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from convscope_client import models as m
from convscope_client.images import ImageInput, body_with_images, file_part, image_arg

Format = Literal["png", "json", "npy"]
ARCHIVES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Call:
    """One request and how its answer becomes a result."""

    method: str
    path: str
    read: Callable[[httpx.Response], Any] | None = None  # None: the answer is a Job (`job`) or nothing
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)  # httpx's json= / data= / files=
    job: Literal["one", "list"] | None = None  # the answer is a Job, or a JobList, made with the client's Job class
    accept: tuple[int, ...] = ()  # error statuses that are an answer here, not an error


def _path(template: str, *parts: Any) -> str:
    """A path with each part percent-encoded (layer names may contain `/`)."""
    return template.format(*(quote(str(part), safe="") for part in parts))


def _model(model_class: type, unwrap: str | None = None) -> Callable[[httpx.Response], Any]:
    def read(response: httpx.Response) -> Any:
        value = model_class.model_validate_json(response.content)
        return getattr(value, unwrap) if unwrap else value
    return read


def _content(response: httpx.Response) -> bytes:
    return response.content


def _view(json_model: type) -> Callable[[httpx.Response], Any]:
    """A forward view answers PNG or npy bytes, or JSON read into `json_model`."""
    def read(response: httpx.Response) -> Any:
        if response.headers.get("content-type", "").startswith("application/json"):
            return json_model.model_validate_json(response.content)
        return response.content
    return read


def _query(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# Service
def health() -> Call:
    return Call("GET", "/healthz", lambda response: True)


def ready() -> Call:
    return Call("GET", "/readyz", lambda response: response.status_code == 200, accept=(503,))


def metrics() -> Call:
    return Call("GET", "/metrics", lambda response: response.text)


def auth() -> Call:
    return Call("GET", "/v1/auth", _model(m.AuthStatus))


def usage() -> Call:
    return Call("GET", "/v1/usage", _model(m.Usage))


# Models
def models() -> Call:
    return Call("GET", "/v1/models", _model(m.ModelList, "models"))


def model(model_id: str) -> Call:
    return Call("GET", _path("/v1/models/{}", model_id), _model(m.ModelInfo))


def upload_model(path: str | Path, name: str | None = None, labels: str | Path | Iterable[str] | None = None,
                 preprocess: dict | None = None) -> Call:
    """`labels`: a text file (one label a line) or the labels themselves; `preprocess` as API.md writes it."""
    files: dict[str, Any] = {"file": file_part(path)}
    if labels is not None:
        if isinstance(labels, (str, Path)):
            files["labels"] = file_part(labels, "text/plain")
        else:
            files["labels"] = ("labels.txt", "\n".join(labels).encode(), "text/plain")
    data = _query(name=name, preprocess=json.dumps(preprocess) if preprocess is not None else None)
    return Call("POST", "/v1/models", _model(m.ModelInfo), body={"files": files, "data": data})


def delete_model(model_id: str) -> Call:
    return Call("DELETE", _path("/v1/models/{}", model_id))


def filters(model_id: str, layer: str, format: Literal["png", "npy"] = "png") -> Call:
    return Call("GET", _path("/v1/models/{}/layers/{}/filters", model_id, layer), _content, params={"format": format})


def circuit(model_id: str, layer: str, channel: int, k: int = 8, source: str | None = None,
            format: Literal["json", "png"] = "json") -> Call:
    """The `k` source units with the largest expanded weights into the unit; `source`: an earlier layer to read."""
    return Call("GET", _path("/v1/models/{}/layers/{}/units/{}/circuit", model_id, layer, channel), _view(m.Circuit),
                params=_query(k=k, source=source, format=format))


# Forward views
def predict(model_id: str, image: ImageInput, top_k: int = 5) -> Call:
    return Call("POST", _path("/v1/models/{}/predict", model_id), _model(m.PredictResponse, "predictions"),
                body=body_with_images({"top_k": top_k}, {"image": image}))


def activations(model_id: str, image: ImageInput, layer: str, format: Format = "png", **spec: Any) -> Call:
    """`spec`: channels, normalize ("channel"|"layer"), colormap."""
    return Call("POST", _path("/v1/models/{}/activations", model_id), _view(m.ActivationsResponse),
                body=body_with_images({"layer": layer, "format": format, **spec}, {"image": image}))


def occlusion(model_id: str, image: ImageInput, format: Format = "png", **spec: Any) -> Call:
    """`spec`: target, patch, stride (input pixels), fill ("mean"|"zero"|"blur"|0–255), colormap."""
    return Call("POST", _path("/v1/models/{}/occlusion", model_id), _view(m.OcclusionResponse),
                body=body_with_images({"format": format, **spec}, {"image": image}))


# Images and datasets
def upload_image(image: ImageInput) -> Call:
    ref, part = image_arg(image)
    if part is None:
        raise TypeError("upload_image takes a path, bytes or a PIL image, not a reference")
    return Call("POST", "/v1/images", _model(m.ImageInfo), body={"files": {"file": part}})


def image(image_id: str) -> Call:
    return Call("GET", _path("/v1/images/{}", image_id), _content)


def upload_dataset(source: str | Path | Iterable[str | Path], name: str | None = None) -> Call:
    """An archive (.zip, .tar, .tar.gz ...), a folder (its files), or a list of image files; `name` to show."""
    if isinstance(source, (str, Path)) and str(source).lower().endswith(ARCHIVES):
        files: Any = {"file": file_part(source)}
    else:
        paths = sorted(p for p in Path(source).iterdir() if p.is_file()) if isinstance(source, (str, Path)) else source
        files = [("files", file_part(path)) for path in paths]
    return Call("POST", "/v1/datasets", _model(m.DatasetCreated), body={"files": files, "data": _query(name=name)})


def datasets() -> Call:
    return Call("GET", "/v1/datasets", _model(m.DatasetList, "datasets"))


def dataset(dataset_id: str) -> Call:
    return Call("GET", _path("/v1/datasets/{}", dataset_id), _model(m.DatasetInfo))


def dataset_image(dataset_id: str, index: int, size: int | None = None) -> Call:
    return Call("GET", _path("/v1/datasets/{}/images/{}", dataset_id, index), _content, params=_query(size=size))


def delete_dataset(dataset_id: str) -> Call:
    return Call("DELETE", _path("/v1/datasets/{}", dataset_id))


# Jobs
def submit(kind: str, model_id: str, image: ImageInput | None = None, *, style_image: ImageInput | None = None,
           dataset: str | None = None, params: dict | None = None, retry: bool = False, wait: float = 0) -> Call:
    spec = {"kind": kind, "model": model_id, "dataset": dataset, "params": params or {}, "retry": retry or None}
    return Call("POST", "/v1/jobs", params=_query(wait=wait or None), job="one",
                body=body_with_images(spec, {"image": image, "style_image": style_image}))


def job(job_id: str) -> Call:
    return Call("GET", _path("/v1/jobs/{}", job_id), job="one")


def jobs(status: str | None = None, kind: str | None = None, limit: int | None = None) -> Call:
    return Call("GET", "/v1/jobs", params=_query(status=status, kind=kind, limit=limit), job="list")


def cancel(job_id: str) -> Call:
    return Call("DELETE", _path("/v1/jobs/{}", job_id), job="one")


def artifact(job_id: str, name: str) -> Call:
    return Call("GET", _path("/v1/jobs/{}/artifacts/{}", job_id, name), _content)


def events(job_id: str, last_event_id: str | None = None) -> Call:
    """The job's server-sent events (read as a stream by the client, not through `read`)."""
    headers = {"last-event-id": last_event_id} if last_event_id else {}
    return Call("GET", _path("/v1/jobs/{}/events", job_id), body={"headers": headers})
