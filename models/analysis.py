"""What happens to an uploaded model before it is accepted (run inside `models.sandbox`'s child).

1. Static checks (`models.validate`): nothing of the file runs before they pass. Then every shape and branch
   must follow from the input's shape (`models.data_dependence`, else 422 `data_dependent_shape`), and one image
   at the nominal size must cost at most the limits' FLOPs and activation bytes (`models.cost`, from inferred
   shapes, else 422 `model_too_expensive`); tensors whose shape inference leaves open are counted from the probe.
2. Probe run on ONNX Runtime (CPU, unoptimised, every tensor an output) on a seeded random
   input at the nominal size: layer shapes, receptive fields, the class count. A batch of two is
   tried first; a model that runs only one image at a time gets `max_batch = 1`. The model's
   output (before any trailing Softmax) is its class scores when it is N×K or N×K×1×1; any other
   shape (a backbone's N×C×H×W features) means no class scores: `num_classes` is None.
3. Declared dynamic H/W are verified, not trusted: ONNX Runtime runs a second size; a model that
   fails there, or changes its class count, is recorded with `dynamic_size = false` (it is still
   useful at its nominal size, to which every image is resized).
4. The torch twin (`models.twin`) is built and compared with ONNX Runtime on the same inputs at
   every probed size, on the model's output (the class scores, or a backbone's features): refused
   when max |twin − ORT| > atol + rtol · max |ORT| at the nominal size (the message names the first
   layer that differs); a disagreement only at the second size makes the size fixed instead.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnx

from models import cost, data_dependence, graph
from models.validate import ImageInput, Limits, ModelRejected, check

log = logging.getLogger(__name__)
RTOL, ATOL = 1e-3, 1e-5
DEFAULT_SIZE = 224


def tolerance(reference: np.ndarray) -> float:
    """Allowed max |twin − ORT|: relative to the magnitude of the reference output."""
    peak = float(np.abs(reference).max()) if reference.size else 0.0
    return ATOL + RTOL * peak


def nominal_size(image: ImageInput, asked: tuple[int, int] | None, limits: Limits) -> tuple[int, int]:
    """The size the model is probed and used at: declared fixed dims, else `asked`, else 224."""
    height = image.height or (asked[0] if asked else DEFAULT_SIZE)
    width = image.width or (asked[1] if asked else DEFAULT_SIZE)
    if asked and (height, width) != tuple(asked):
        raise ModelRejected("input_size_mismatch", f"the model's input is fixed at {image.height}×{image.width}; "
                            f"input_size asks for {asked[0]}×{asked[1]}")
    if height * width > limits.max_input_pixels:
        raise ModelRejected("input_too_large", f"an input of {height}×{width} pixels is over the limit of "
                            f"{limits.max_input_pixels} pixels")
    return height, width


def second_size(image: ImageInput, size: tuple[int, int]) -> tuple[int, int]:
    """Another size for each symbolic axis (32 px smaller, or larger for small inputs)."""
    other = lambda n: n - 32 if n > 96 else n + 32  # noqa: E731
    return (size[0] if image.height else other(size[0]), size[1] if image.width else other(size[1]))


def analyse(data: bytes, limits: Limits = Limits(), input_size: tuple[int, int] | None = None,
            threads: int = 1) -> dict:
    """Everything the record needs, or `ModelRejected`. Returns a JSON-serialisable dict."""
    started = time.perf_counter()
    model, image = check(data, limits)
    del data
    origins = data_dependence.check(model, image.name)
    size = nominal_size(image, input_size, limits)
    shapes = cost.shapes_at(model, image, size, origins)
    estimate = cost.count(model, shapes)
    cost.check_limits(estimate, limits, size)
    logits = graph.logits_name(model)
    x = np.random.default_rng(0).standard_normal((2, image.channels, *size)).astype(np.float32)

    session = _session(model, threads)
    try:
        values, max_batch = _probe(session, image, logits, x)
    except ModelRejected as exc:
        if (image.height is None or image.width is None) and not input_size:
            exc.message += (f"; the input size is dynamic and was taken as {size[0]}×{size[1]}: if the model "
                            "expects another size, give it as preprocess.input_size")
        raise
    values.setdefault(image.name, x)
    if estimate.unknown:  # shapes inference left open are what the probe found at this size
        shapes.update(cost.probe_shapes(values, len(x) if max_batch is None else 1, estimate.unknown))
        estimate = cost.count(model, shapes)
        cost.check_limits(estimate, limits, size)
    reference = values[logits]
    num_classes = class_count(reference, logits, len(x))
    layers = graph.layers(model, values)
    notes: list[str] = []
    dynamic = image.height is None or image.width is None
    other = None
    if dynamic:
        other = second_size(image, size)
        x2 = np.random.default_rng(1).standard_normal((2, image.channels, *other)).astype(np.float32)
        try:
            ref2 = _run(session, image.name, [logits], x2, max_batch)[0]
            if class_count(ref2, logits, len(x2)) != num_classes:
                raise ValueError("the class count (or whether there are class scores) changes with the input size")
        except Exception as exc:  # ONNX Runtime refuses the size, or the head is size-bound
            notes.append(f"declared dynamic H/W but fails at {other[0]}×{other[1]} ({_short(exc)}); size fixed")
            dynamic, other = False, None
    del session
    probed = time.perf_counter()

    twin = _twin(model, image.name, logits, [layer.name for layer in layers], threads)
    del model
    checks = [_compare(twin, x, reference, size, values, layers)]
    if other is not None:
        result = _compare(twin, x2, ref2, other, None, layers, fatal=False)
        checks.append(result)
        if not result["agree"]:
            notes.append(f"twin and ONNX Runtime disagree at {other[0]}×{other[1]}; size fixed")
            dynamic = False
    log.info("analysed model: probe %.1fs, twin %.1fs", probed - started, time.perf_counter() - probed)
    return {
        "input": {"channels": image.channels, "height": size[0], "width": size[1], "dynamic_size": dynamic},
        "input_name": image.name, "logits_name": logits, "num_classes": num_classes,
        "layers": [layer.model_dump() for layer in layers], "max_batch": max_batch,
        "checks": checks, "notes": notes, "cost": estimate.record(),
    }


def _session(model: onnx.ModelProto, threads: int):
    try:
        return graph.probe_session(model, ["CPUExecutionProvider"], threads)
    except Exception as exc:
        raise ModelRejected("onnxruntime_failed", f"ONNX Runtime cannot load the model: {_short(exc)}") from None


def _run(session, input_name: str, names: list[str], x: np.ndarray, max_batch: int | None) -> list[np.ndarray]:
    if max_batch is None:
        return session.run(names, {input_name: x})
    parts = [session.run(names, {input_name: x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]


def _probe(session, image: ImageInput, logits: str, x: np.ndarray) -> tuple[dict[str, np.ndarray], int | None]:
    """All tensors for a batch of two; with `max_batch` 1 when the model only runs one image at a time."""
    names = [o.name for o in session.get_outputs()]
    if logits not in names:
        raise ModelRejected("bad_output", f"the model's output {logits!r} is not computed by the graph")
    if image.batch is None:
        try:
            values = dict(zip(names, session.run(names, {image.name: x})))
            if values[logits].shape[:1] == (len(x),):
                return values, None
        except Exception:  # a head exported for batch 1 (Reshape [1, -1]) fails here; try one at a time
            pass
    try:
        first = dict(zip(names, session.run(names, {image.name: x[:1]})))
        second = session.run([logits], {image.name: x[1:]})[0]
    except Exception as exc:
        if "allocate" in str(exc).lower():
            raise ModelRejected("analysis_out_of_resources", "running the model on a probe input needs more "
                                "memory than convscope allows for analysing a model (ONNX Runtime could not "
                                "allocate a tensor); a graph that builds huge tensors is refused") from None
        raise ModelRejected("onnxruntime_failed", f"ONNX Runtime cannot run the model on a "
                            f"{x.shape[2]}×{x.shape[3]} input: {_short(exc)}") from None
    first[logits] = np.concatenate([first[logits], second]) if first[logits].shape[:1] == (1,) else first[logits]
    return first, 1


def class_count(output: np.ndarray, name: str, batch: int) -> int | None:
    """Classes the model scores, or None when its output is not class scores.

    Class scores are N×K or N×K×1×1 (one score per class; any trailing unit axes); any other shape
    (a backbone's N×C×H×W features, one value per image, N×T×D) is a model without class scores,
    accepted with `num_classes` None. Either way the output keeps the batch axis and is float and
    finite on a random input, since it is what the twin-vs-ONNX-Runtime check compares:
    `bad_class_scores` when class-shaped scores are broken, `bad_output` otherwise.
    """
    if output.ndim < 1 or output.shape[0] != batch:
        raise ModelRejected("bad_output", f"the model's output {name!r} has shape {list(output.shape)} for a batch "
                            f"of {batch}; keep the batch axis first when exporting")
    scores = output.ndim >= 2 and all(d == 1 for d in output.shape[2:])
    code, what = ("bad_class_scores", "class scores") if scores else ("bad_output", "output")
    if not np.issubdtype(output.dtype, np.floating):
        raise ModelRejected(code, f"the model's {what} {name!r} are {output.dtype}, not float")
    if not np.isfinite(output).all():
        raise ModelRejected(code, f"the model's {what} {name!r} are not finite (NaN or inf) on a random input; "
                            "check the weights")
    return int(output.shape[1]) if scores else None


def _twin(model: onnx.ModelProto, input_name: str, logits: str, layers: list[str], threads: int):
    import torch

    from models.twin import build_twin
    from models.twin_base import Unsupported

    torch.set_num_threads(threads)

    try:
        return build_twin(model, input_name, logits, layers)
    except Unsupported as exc:
        raise ModelRejected("not_differentiable", f"the model cannot be converted to torch: {exc}") from None


def _compare(twin, x: np.ndarray, reference: np.ndarray, size, values, layers, fatal: bool = True) -> dict:
    """Twin vs ONNX Runtime output (class scores or features) on `x`, a batch of two, compared flattened
    per image; refuse (fatal) or report a disagreement."""
    import torch

    try:
        with torch.no_grad():
            out = twin.module(torch.from_numpy(x)).numpy()
    except Exception as exc:
        if not fatal:
            return {"size": list(size), "agree": False, "error": _short(exc)}
        raise ModelRejected("twin_failed", f"the torch twin of the model fails on a batch of 2 at "
                            f"{size[0]}×{size[1]}: {_short(exc)}") from None
    ref = reference.reshape(len(x), -1)
    diff = float(np.abs(out - ref).max()) if out.shape == ref.shape else float("inf")
    result = {"size": list(size), "batch": len(x), "max_abs_diff": diff, "tolerance": tolerance(ref),
              "agree": diff <= tolerance(ref)}
    if not result["agree"] and fatal:
        where = _first_difference(twin, x, values, layers)
        raise ModelRejected(
            "twin_mismatch", f"the torch twin and ONNX Runtime disagree on a probe input at {size[0]}×{size[1]} "
            f"(max |difference| {diff:.3g}, tolerance {result['tolerance']:.3g}){where}; convscope cannot compute "
            "gradients it can trust for this model", details=result)
    return result


def _first_difference(twin, x, values, layers) -> str:
    """', first at layer NAME (OP)' for the first layer whose twin value differs from ONNX Runtime."""
    import torch

    if values is None:
        return ""
    try:
        computed = twin.module.tensors(torch.from_numpy(x))
    except Exception:
        return ""
    for layer in layers:
        mine, ref = computed.get(layer.name), values.get(layer.name)
        if mine is None or ref is None:
            continue
        mine = mine.numpy()[: len(ref)]
        if mine.shape != ref.shape or float(np.abs(mine - ref).max()) > tolerance(ref):
            return f", first at layer {layer.name!r} ({layer.op})"
    return ""


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or exc.__class__.__name__
