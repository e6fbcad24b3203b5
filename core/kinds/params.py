"""The base of every kind's parameters, shared by the registry and the params modules. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from core.model_record import ModelRecord

Target = int | str


@dataclass(frozen=True)
class Workload:
    """What a job's step count depends on beside its params: the model, the worker's batch size
    (`attribution_batch` for gradient kinds, `dataset_batch` for dataset kinds), for dataset
    kinds how many images the dataset holds, and how many perturbed copies go through ONNX Runtime
    at once (`forward_batch`: deletion/insertion scores, RISE, Kernel SHAP)."""

    record: ModelRecord
    batch: int
    images: int = 0
    forward_batch: int = 32


class Params(BaseModel):
    """Base of every kind's parameters: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    def resolve(self, record: ModelRecord) -> Params:
        """Check the values against `record` (ValueError with a sentence; the record raises 422
        `no_class_scores` when they need a class and the model has none) and fill model defaults."""
        return self

    def total_steps(self, work: Workload) -> int:
        """The `total` of every progress(step, total) the job reports for these (resolved) params: the runner
        writes it when it claims the job and keeps it while the job runs. Default: one pass."""
        return 1

    def method_steps(self, work: Workload) -> int:
        """The steps of these that the kind's method itself reports (the rest are the runner's: the
        deletion/insertion scores of an attribution). Default: all of them."""
        return self.total_steps(work)


def batches(items: int, batch: int) -> int:
    """How many batches of at most `batch` hold `items` (ceiling division)."""
    return -(-items // batch)


def spatial_layer(record: ModelRecord, name: str):
    """The record's layer `name` (ValueError when the model has none of that name)."""
    layer = record.layer(name)
    if layer is None:
        raise ValueError(f"model {record.id!r} has no layer {name!r}")
    return layer


def layer_or_last(record: ModelRecord, name: str | None) -> str:
    """`name` if the record has that layer; with no name, the model's last spatial layer."""
    if name is None:
        if not record.layers:
            raise ValueError(f"model {record.id!r} lists no spatial layer")
        name = record.layers[-1].name
    spatial_layer(record, name)
    return name


def middle_layer(record: ModelRecord) -> str:
    """The model's spatial layer about two thirds deep (the default layer of the kinds that read one)."""
    if not record.layers:
        raise ValueError(f"model {record.id!r} has no spatial layer")
    return record.layers[len(record.layers) * 2 // 3].name


def channels(record: ModelRecord, name: str) -> int:
    """How many channels the record's layer `name` has."""
    return spatial_layer(record, name).shape[0]
