"""What a job kind is: its params, what it reads and returns, which engine runs it, where its method lives.
Torch-free.

Each family of kinds declares its own `Kind` entries next to its params (`core/kinds/<family>.py`, as
`KINDS`); `core.kinds.registry` collects them. A kind's method is, by convention, `run(task)` in
`workers/methods/<family>/<name>.py`, returning the kind's result type (`core.methods`): adding a kind is
its params and `Kind` entry in the family module, plus its method module.

A kind declares what it reads (`reads`: inputs, each with a source the API knows how to accept, digest and
keep, and the worker knows how to load) and what it returns (`returns`), and which engine runs it (torch on
the workers' device, or ONNX Runtime for forward-only kinds). A kind that reads a new input is one `Input`
here, one loader on each side (`service/job_inputs.py`, `workers/inputs.py`) and its method module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.kinds.params import Params
from core.methods import Attribution


class Source(StrEnum):
    """Where an input comes from: how the API accepts it and the worker loads it."""

    IMAGE = "image"  # a multipart part, {"id"} of an uploaded image, or {"data"}: kept by content hash
    DATASET = "dataset"  # the id of one of the caller's datasets (which never change: the id is the content)


@dataclass(frozen=True)
class Input:
    """One input of a kind: the request field (and multipart part) `name`, its source, and whether a job of
    the kind must give it (an optional one is simply absent from the job's inputs when not given)."""

    name: str
    source: Source
    description: str
    required: bool = True


IMAGE = Input("image", Source.IMAGE, "the image to explain or start from")
STYLE_IMAGE = Input("style_image", Source.IMAGE, "the image whose style (Gram matrices) is copied")
DATASET = Input("dataset", Source.DATASET, "a dataset id from `POST /v1/datasets`")
SOME_DATASET = Input("dataset", Source.DATASET, "a dataset id from `POST /v1/datasets` (optional: top patches and "
                     "statistics of each channel)", required=False)


class Engine(StrEnum):
    TORCH = "torch"  # a network on the worker's device (gradients)
    ONNXRUNTIME = "onnxruntime"  # forward passes only, on the model's ONNX file


class Family(StrEnum):
    """The families of kinds: one params module in `core/kinds/` and one method folder in `workers/methods/` each."""

    ATTRIBUTION = "attribution"
    TRUST = "trust"
    MAKING = "making"
    DATASET = "dataset"
    ATLAS = "atlas"


@dataclass(frozen=True)
class Kind:
    """One kind of job: its params, its family (where its method lives), its time limit, what it reads and
    returns, and the engine that runs it."""

    name: str
    params: type[Params]
    time_limit_s: int  # at time-limit scale 1; the job then fails with code `timeout`
    summary: str
    family: Family
    reads: tuple[Input, ...] = (IMAGE,)
    returns: type = Attribution  # a result type of `core.methods`
    engine: Engine = Engine.TORCH

    @property
    def method(self) -> str:
        """"module:function" of the method the worker calls as function(task)."""
        return f"workers.methods.{self.family}.{self.name}:run"

