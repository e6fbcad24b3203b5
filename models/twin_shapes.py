"""Converters for the ONNX ops that move, reshape, index and reduce tensors (and the shape
arithmetic some exporters compute at run time: `Shape` → `Gather` → `Concat` → `Reshape`/`Pad`).
They run eagerly on whatever size comes in, so a graph with dynamic H/W stays dynamic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx
import torch

from models.twin_base import DTYPES, Concat, Lambda, NodeContext, Pad, Reshape, Step, Unsupported


def reshape(c: NodeContext):
    shape = c.value(1)
    allowzero = bool(c.attr("allowzero", 0))
    if shape is not None:
        follow = c.value(0) is None  # never for constants (a bias reshaped to 1×C×1×1)
        return Step(Reshape([int(s) for s in shape.tolist()], allowzero, follow), [c.input(0)], [c.node.output[0]])
    return Reshape(None, allowzero)


def flatten(c: NodeContext):
    axis = int(c.attr("axis", 1))

    def run(x):
        a = axis % x.ndim if x.ndim else 0
        lead = math.prod(x.shape[:a])
        return x.reshape(lead, -1) if x.numel() else x.reshape(lead, math.prod(x.shape[a:]))

    return Lambda("Flatten", run)


def _axes(c: NodeContext, index: int, attr_until: int) -> tuple[list[int] | None, list[str]]:
    """Axes from the attribute (opset < attr_until) or a constant input; inputs left for run time."""
    if c.opset < attr_until:
        return (list(c.attrs["axes"]) if "axes" in c.attrs else None), [c.input(0)]
    return c.ints(index), [c.input(0)]


def squeeze(c: NodeContext):
    axes, inputs = _axes(c, 1, 13)
    return Step(Lambda("Squeeze", _squeeze, axes=axes), inputs, [c.node.output[0]])


def _squeeze(x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.ndim for a in axes)) if axes else x


def unsqueeze(c: NodeContext):
    axes, inputs = _axes(c, 1, 13)
    return Step(Lambda("Unsqueeze", _unsqueeze, axes=axes), inputs, [c.node.output[0]])


def _unsqueeze(x, axes):
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def transpose(c: NodeContext):
    perm = c.attr("perm")
    return Lambda("Transpose", lambda x: x.permute(*(perm or range(x.ndim - 1, -1, -1))))


def concat(c: NodeContext):
    return Concat(int(c.attr("axis")))


def split(c: NodeContext):
    axis = int(c.attr("axis", 0))
    sizes = list(c.attrs["split"]) if c.opset < 13 and "split" in c.attrs else c.ints(1) if c.opset >= 13 else None
    parts = len(c.node.output)

    def run(x):
        if sizes:
            return torch.split(x, sizes, axis)
        n = x.shape[axis]
        return torch.split(x, -(-n // parts), axis)

    return Step(Lambda("Split", run), [c.input(0)], list(c.node.output))


def shape(c: NodeContext):
    start, end = c.attr("start", 0), c.attr("end", None)
    return Lambda("Shape", lambda x: torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device))


def gather(c: NodeContext):
    axis = int(c.attr("axis", 0))

    def run(x, idx):
        a = axis % x.ndim
        idx = torch.where(idx < 0, idx + x.shape[a], idx).long()
        out = torch.index_select(x, a, idx.reshape(-1))
        return out.reshape(x.shape[:a] + idx.shape + x.shape[a + 1:])

    return Lambda("Gather", run)


def cast(c: NodeContext):
    to = int(c.attr("to"))
    if to not in DTYPES:
        raise Unsupported(f"{c.where()}: cast to {onnx.TensorProto.DataType.Name(to)} is not supported")
    return Lambda("Cast", lambda x: x.to(DTYPES[to]))


def constant_of_shape(c: NodeContext):
    value = c.attrs.get("value")
    fill = torch.from_numpy(onnx.numpy_helper.to_array(value).copy()) if value is not None else torch.zeros(1)

    def run(shape):
        return fill.to(shape.device).reshape(()).expand([int(s) for s in shape.tolist()]).clone()

    return Lambda("ConstantOfShape", run)


def pad(c: NodeContext):
    mode = c.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise Unsupported(f"{c.where()}: pad mode {mode!r} is not supported")
    if c.opset < 11:
        return Step(Pad(list(c.attr("pads")), mode, float(c.attr("value", 0.0))), [c.input(0)], [c.node.output[0]])
    return Step(Pad(None, mode), [c.input(i) for i in range(len(c.node.input))], [c.node.output[0]])


def slice_(c: NodeContext):
    if c.opset < 10:
        starts, ends = list(c.attr("starts")), list(c.attr("ends"))
        axes = list(c.attr("axes", range(len(starts))))
        return Step(Lambda("Slice", _slice, starts=starts, ends=ends, axes=axes), [c.input(0)], [c.node.output[0]])
    return Step(Lambda("Slice", _slice_inputs), [c.input(i) for i in range(len(c.node.input))], [c.node.output[0]])


def _slice_inputs(x, starts, ends, axes=None, steps=None):
    as_list = lambda t: [int(v) for v in t.reshape(-1).tolist()]  # noqa: E731
    return _slice(x, as_list(starts), as_list(ends), as_list(axes) if axes is not None else None,
                  as_list(steps) if steps is not None else None)


def _slice(x, starts, ends, axes=None, steps=None):
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.ndim
        picked = range(x.shape[axis])[slice(start, end, step)]
        if step > 0:
            index = [slice(None)] * axis + [slice(picked.start, picked.stop, step)]
            x = x[tuple(index)]
        else:
            x = torch.index_select(x, axis, torch.tensor(list(picked), dtype=torch.long, device=x.device))
    return x


def reduce(c: NodeContext, fn: Callable):
    keep = bool(c.attr("keepdims", 1))
    noop = bool(c.attr("noop_with_empty_axes", 0))
    attr_until = 13 if c.node.op_type == "ReduceSum" else 18
    axes, inputs = _axes(c, 1, attr_until)

    def run(x):
        if not axes:
            return x if noop else fn(x, tuple(range(x.ndim)), keep)
        return fn(x, tuple(a % x.ndim for a in axes), keep)

    return Step(Lambda(c.node.op_type, run), inputs, [c.node.output[0]])


def expand(c: NodeContext):
    return Lambda("Expand", lambda x, s: x.expand(torch.broadcast_shapes(x.shape, tuple(int(v) for v in s.tolist()))))


def tile(c: NodeContext):
    return Lambda("Tile", lambda x, r: x.repeat([int(v) for v in r.tolist()]))
