"""The one path by which a model enters the store, built-in or uploaded: analyse, record, keep."""

from __future__ import annotations

import time

import onnx

from models import graph, runtime
from models.record import InputSpec, ModelRecord, Preprocess
from models.store import ModelStore


def describe(data: bytes, *, default_size: int = 224) -> tuple[onnx.ModelProto, InputSpec, str, str]:
    """Parse ONNX bytes (no external data) → (proto, input spec, input name, logits name)."""
    model = onnx.load_model_from_string(data)
    image = graph.image_input(model)
    dims = image.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"the input {image.name!r} has {len(dims)} dimensions; an image input is N×C×H×W")
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if fixed[1] is None:
        raise ValueError("the input's channel count is not declared")
    height = fixed[2] or default_size
    width = fixed[3] or default_size
    spec = InputSpec(channels=fixed[1], height=height, width=width, dynamic_size=fixed[2] is None or fixed[3] is None)
    return model, spec, image.name, graph.logits_name(model)


def register(
    store: ModelStore,
    data: bytes,
    *,
    model_id: str,
    name: str,
    source: str,
    preprocess: Preprocess,
    labels: list[str] | None = None,
    owner: str | None = None,
    provider_setting: str = "auto",
) -> ModelRecord:
    """Analyse the model (probe run, layer graph) and keep it in the store; returns its record."""
    model, spec, input_name, logits = describe(data)
    values = graph.probe_values(model, input_name, (1, spec.channels, spec.height, spec.width),
                                runtime.providers(provider_setting))
    if logits not in values:
        raise ValueError(f"class-score tensor {logits!r} was not produced by the probe run")
    num_classes = int(values[logits].reshape(values[logits].shape[0], -1).shape[1])
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels given for {num_classes} classes")
    record = ModelRecord(
        id=model_id, name=name, source=source, input=spec, preprocess=preprocess,
        num_classes=num_classes, labels=labels, layers=graph.layers(model, values),
        onnx_sha256=store.put_blob(data), input_name=input_name, logits_name=logits,
        owner=owner, created_at=time.time(), size_bytes=len(data),
    )
    store.put(record)
    return record
