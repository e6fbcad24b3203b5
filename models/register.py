"""The one path by which a model enters the store, built-in or uploaded: check, probe, record, keep.

`register` runs the static checks, the probe run and the twin-vs-ONNX-Runtime check in a
sandboxed child (`models.sandbox`), checks the preprocessing and labels against what the probe
found, and only then writes the file (named by its sha256) and the record, each atomically.
"""

from __future__ import annotations

import time

from core.model_record import InputSpec, Layer, ModelCost, ModelRecord, Preprocess
from core.stores.models import ModelStore
from models.sandbox import SandboxLimits, analyse
from models.validate import Limits, ModelRejected


def default_preprocess(channels: int) -> Preprocess:
    """0–255 pixels scaled to 0–1, no mean or std: RGB for colour models, L for grey ones."""
    if channels == 1:
        return Preprocess(mean=[0.0], std=[1.0], color="L")
    return Preprocess()


def check_preprocess(preprocess: Preprocess, channels: int) -> None:
    if (preprocess.color == "L") != (channels == 1):
        raise ModelRejected("preprocess_mismatch", f"the model takes {channels} channel(s) but preprocess.color is "
                            f"{preprocess.color!r}; use 'L' for 1 channel, 'RGB' or 'BGR' for 3")
    for key in ("mean", "std"):
        values = getattr(preprocess, key)
        if len(values) not in (1, channels):
            raise ModelRejected("preprocess_mismatch", f"preprocess.{key} has {len(values)} values; the model "
                                f"takes {channels} channel(s)")
    if any(s == 0 for s in preprocess.std):
        raise ModelRejected("preprocess_mismatch", "preprocess.std must not contain 0")


def crop_input_size(preprocess: Preprocess | None, input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The input size a crop size names (`preprocess.crop` as [h, w]), checked against `input_size` when both are
    given. The analysis then uses a dynamic-size model at that size and refuses a fixed size that differs."""
    crop = preprocess.crop_size() if preprocess else None
    if crop and input_size and tuple(input_size) != crop:
        raise ModelRejected("crop_mismatch", f"preprocess.crop is {crop[0]}×{crop[1]} but input_size is "
                            f"{input_size[0]}×{input_size[1]}; the crop is what the model is fed, so they must agree")
    return crop


def register(
    store: ModelStore,
    data: bytes,
    *,
    model_id: str,
    name: str,
    source: str,
    preprocess: Preprocess | None = None,
    labels: list[str] | None = None,
    owner: str | None = None,
    limits: Limits = Limits(),
    sandbox: SandboxLimits = SandboxLimits(),
    input_size: tuple[int, int] | None = None,
) -> ModelRecord:
    """Analyse the model in the sandbox and keep it in the store; returns its record.

    Raises `ModelRejected` (status 422, or 413 for size) with a message for the user. The probe
    always runs on CPU in the sandbox.
    """
    if len(data) > limits.max_bytes:
        raise ModelRejected("model_too_large", f"the file is {len(data)} bytes; the limit is {limits.max_bytes}",
                            status=413)
    crop = crop_input_size(preprocess, input_size)
    try:
        found = analyse(data, limits, sandbox, input_size or crop)
    except ModelRejected as exc:
        if exc.code == "input_size_mismatch" and crop and not input_size:  # the size came from the crop
            raise ModelRejected("crop_mismatch", f"preprocess.crop is {crop[0]}×{crop[1]} but "
                                f"{exc.message.partition(';')[0]}; a crop size must be the model's input size",
                                details={"crop": list(crop)}) from None
        raise
    spec = InputSpec(**found["input"])
    preprocess = preprocess or default_preprocess(spec.channels)
    check_preprocess(preprocess, spec.channels)
    num_classes = found["num_classes"]
    if labels is not None and num_classes is None:
        raise ModelRejected("labels_mismatch", f"{len(labels)} labels given, but the model has no class scores "
                            "(its output is not N×classes); upload it without labels")
    if labels is not None and len(labels) != num_classes:
        raise ModelRejected("labels_mismatch", f"{len(labels)} labels given for {num_classes} classes; "
                            "give one label a line, in class-index order")
    return store.add(data, lambda digest: ModelRecord(
        id=model_id, name=name, source=source, input=spec, preprocess=preprocess,
        num_classes=num_classes, labels=labels, layers=[Layer(**layer) for layer in found["layers"]],
        onnx_sha256=digest, input_name=found["input_name"], logits_name=found["logits_name"],
        owner=owner, created_at=time.time(), size_bytes=len(data), max_batch=found["max_batch"],
        cost=ModelCost(**found["cost"]),
    ))
