"""ONNX op → torch module, one converter per op type; `CONVERTERS` is the allow-list of ops.

Every node becomes one or more `Step`s (a module, the tensor names it reads, the names it
writes). Rectifiers and max-pooling become the stock torch modules (`nn.ReLU`, `nn.ReLU6`,
`nn.Hardtanh`, `nn.LeakyReLU`, `nn.MaxPool2d`) so gradient methods can find them by type
and swap their backward rule; weights become parameters of `nn.Conv2d`, `nn.Linear`,
`nn.BatchNorm2d`-style modules. Padding that torch layers cannot express (asymmetric, or
TF-style SAME computed at run time) becomes a separate padding step before the layer.

Semantics follow the ONNX operator docs for the opset the model imports (attributes that
moved to inputs in later opsets are read from either place).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from models.ops import SUPPORTED_OPS

DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT16: torch.int16, onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool,
}
FLT_MAX = 3.0e38


class Unsupported(ValueError):
    """A node this converter cannot turn into torch (the message names it and says why)."""


@dataclass
class Step:
    module: nn.Module
    inputs: list[str]
    outputs: list[str]


@dataclass
class NodeContext:
    """What a converter may know about its node: attributes, opset, and folded constants."""

    node: onnx.NodeProto
    opset: int
    const: Callable[[str], torch.Tensor | None]
    subgraph: Callable[[onnx.GraphProto], nn.Module] | None = None
    attrs: dict = field(default_factory=dict)
    counter: list = field(default_factory=lambda: [0])

    def __post_init__(self):
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in self.node.attribute}

    def attr(self, name, default=None):
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def input(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def value(self, i: int) -> torch.Tensor | None:
        name = self.input(i)
        return self.const(name) if name else None

    def ints(self, i: int) -> list[int] | None:
        """An optional input (or None) as a constant int list; raises if it is computed at run time."""
        if not self.input(i):
            return None
        v = self.value(i)
        if v is None:
            raise Unsupported(f"{self.node.op_type} node {self.node.name or self.node.output[0]!r}: input "
                              f"{self.input(i)!r} must be a constant")
        return [int(x) for x in v.reshape(-1).tolist()]

    def temp(self) -> str:
        self.counter[0] += 1
        return f"{self.node.output[0]}::pre{self.counter[0]}"

    def where(self) -> str:
        return f"{self.node.op_type} node {self.node.name or self.node.output[0]!r}"


# ---- small modules -------------------------------------------------------------------------

class Lambda(nn.Module):
    """A stateless op given by a function; `op` is kept for printing."""

    def __init__(self, op: str, fn: Callable, **kwargs):
        super().__init__()
        self.op, self.fn, self.kwargs = op, fn, kwargs

    def forward(self, *args):
        return self.fn(*args, **self.kwargs)

    def extra_repr(self) -> str:
        return f"{self.op}{self.kwargs or ''}"


class Add(nn.Module):
    """Element-wise sum of any number of inputs (ONNX `Add`, `Sum`): the residual merge."""

    def forward(self, *xs):
        return functools.reduce(torch.add, xs)


class Mul(nn.Module):
    def forward(self, a, b):
        return a * b


class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs):
        return torch.cat(xs, self.axis)


class Pad(nn.Module):
    """ONNX Pad: `pads` = [begin of each axis..., end of each axis...] (negative crops)."""

    def __init__(self, pads: list[int] | None, mode: str = "constant", value: float = 0.0, axes: list[int] | None = None):
        super().__init__()
        self.pads, self.mode, self.value, self.axes = pads, mode, value, axes

    def forward(self, x, pads=None, value=None, axes=None):
        pads = self.pads if pads is None else [int(p) for p in pads.reshape(-1).tolist()]
        axes = self.axes if axes is None else [int(a) for a in axes.reshape(-1).tolist()]
        fill = self.value if value is None or value.numel() == 0 else float(value.reshape(-1)[0])
        axes = [a % x.ndim for a in axes] if axes is not None else list(range(x.ndim))
        n = len(axes)
        amount = dict(zip(axes, zip(pads[:n], pads[n:])))
        torch_pads: list[int] = []
        last = max((a for a, p in amount.items() if p != (0, 0)), default=None)
        if last is None:
            return x
        first = min(a for a, p in amount.items() if p != (0, 0))
        for axis in range(x.ndim - 1, first - 1, -1):
            torch_pads += list(amount.get(axis, (0, 0)))
        mode = {"edge": "replicate"}.get(self.mode, self.mode)
        if mode == "constant":
            return F.pad(x, torch_pads, value=fill)
        return F.pad(x, torch_pads, mode=mode)


class SamePad(nn.Module):
    """TF-style SAME padding computed from the run-time input size (ONNX `auto_pad`)."""

    def __init__(self, kernel, stride, dilation, upper: bool, value: float = 0.0):
        super().__init__()
        self.kernel, self.stride, self.dilation, self.upper, self.value = kernel, stride, dilation, upper, value

    def forward(self, x):
        pads: list[int] = []
        for axis in range(len(self.kernel) - 1, -1, -1):
            n = x.shape[2 + axis]
            k_eff = (self.kernel[axis] - 1) * self.dilation[axis] + 1
            total = max((math.ceil(n / self.stride[axis]) - 1) * self.stride[axis] + k_eff - n, 0)
            small = total // 2
            pads += [small, total - small] if self.upper else [total - small, small]
        return F.pad(x, pads, value=self.value)


class MaskedAvgPool(nn.Module):
    """Average pooling over explicitly padded input that does not count the padding
    (ONNX `count_include_pad=0` with pads torch cannot express): sum / number of real pixels."""

    def __init__(self, kernel, stride, pads, ceil_mode: bool):
        super().__init__()
        self.pad = Pad(pads, axes=list(range(2, 2 + len(kernel))))
        self.kernel, self.stride, self.ceil_mode = kernel, stride, ceil_mode

    def forward(self, x):
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(self.kernel)]
        ones = torch.ones_like(x[:1, :1])
        total = pool(self.pad(x), self.kernel, self.stride, ceil_mode=self.ceil_mode)
        count = pool(self.pad(ones), self.kernel, self.stride, ceil_mode=self.ceil_mode)
        return total / count


class LRN(nn.Module):
    """ONNX LRN for even sizes (torch's window is centred differently there):
    y = x / (bias + alpha/size · Σ x² over channels [c - ⌊(size-1)/2⌋, c + ⌈(size-1)/2⌉])^beta."""

    def __init__(self, size: int, alpha: float, beta: float, bias: float):
        super().__init__()
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def forward(self, x):
        sq = (x * x).unsqueeze(1)
        before, after = (self.size - 1) // 2, self.size - 1 - (self.size - 1) // 2
        sq = F.pad(sq, (0, 0) * (x.ndim - 2) + (before, after))
        window = (self.size,) + (1,) * (x.ndim - 2)
        pool = {3: F.avg_pool2d, 4: F.avg_pool3d}[x.ndim]
        div = pool(sq, window, stride=1).squeeze(1)
        return x / (self.bias + self.alpha * div) ** self.beta


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """Inference batch normalisation over axis 1 of an input of any rank ≥ 2."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError("BatchNormalization needs at least 2 dimensions")


class Reshape(nn.Module):
    """ONNX Reshape (0 copies the input's dimension unless `allowzero`). A constant target whose
    leading dimension is 1 follows the batch when the input holds more than one image, so a
    head exported at batch 1 (`Reshape [1, -1]`) still works on a batch; the probe checks it."""

    def __init__(self, shape: list[int] | None, allowzero: bool):
        super().__init__()
        self.shape, self.allowzero = shape, allowzero

    def forward(self, x, shape=None):
        target = self.shape if shape is None else [int(s) for s in shape.reshape(-1).tolist()]
        if not self.allowzero:
            target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
        if shape is None and target and target[0] == 1 and x.ndim >= 1 and x.shape[0] > 1:
            target = [x.shape[0]] + list(target[1:])
        return x.reshape(target)


class If(nn.Module):
    """ONNX If: runs the then- or else-subgraph (both converted) on the condition's value."""

    def __init__(self, then_graph: nn.Module, else_graph: nn.Module):
        super().__init__()
        self.then_graph, self.else_graph = then_graph, else_graph

    def forward(self, cond, lookup):
        branch = self.then_graph if bool(cond.reshape(-1)[0]) else self.else_graph
        outs = branch.run(lookup)
        return outs[0] if len(outs) == 1 else tuple(outs)


# ---- helpers -----------------------------------------------------------------------------

def _pads(c: NodeContext, rank: int) -> list[int]:
    return list(c.attr("pads", [0] * (2 * rank)))


def _padding_step(c: NodeContext, kernel, stride, dilation, value: float) -> tuple[list[Step], list[int] | None]:
    """Steps that pad the input explicitly, and the symmetric padding left for the torch layer."""
    rank = len(kernel)
    auto = c.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        tmp = c.temp()
        return [Step(SamePad(kernel, stride, dilation, auto == "SAME_UPPER", value), [c.input(0)], [tmp])], [0] * rank
    pads = [0] * (2 * rank) if auto == "VALID" else _pads(c, rank)
    begin, end = pads[:rank], pads[rank:]
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    if begin == end and all(p <= k // 2 for p, k in zip(begin, k_eff)):
        return [], begin
    tmp = c.temp()
    return [Step(Pad(pads, value=value, axes=list(range(2, 2 + rank))), [c.input(0)], [tmp])], [0] * rank


def _chain(c: NodeContext, pre: list[Step], module: nn.Module) -> list[Step]:
    source = pre[-1].outputs[0] if pre else c.input(0)
    return pre + [Step(module, [source], [c.node.output[0]])]


def _spatial(c: NodeContext, kernel) -> tuple[list[int], list[int]]:
    rank = len(kernel)
    return list(c.attr("strides", [1] * rank)), list(c.attr("dilations", [1] * rank))


# ---- converters --------------------------------------------------------------------------

def conv(c: NodeContext):
    weight, bias = c.value(1), c.value(2)
    if weight is None or (c.input(2) and bias is None):
        raise Unsupported(f"{c.where()}: convolution weights must be constants (initializers or Constant nodes)")
    if weight.ndim != 4:
        raise Unsupported(f"{c.where()}: only 2-D convolutions are supported (weights are {weight.ndim}-D)")
    kernel = list(weight.shape[2:])
    stride, dilation = _spatial(c, kernel)
    groups = int(c.attr("group", 1))
    pre, padding = _padding_step(c, kernel, stride, dilation, 0.0)
    layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], kernel, stride, padding, dilation, groups,
                      bias=bias is not None)
    layer.weight.data = weight.float().contiguous()
    if bias is not None:
        layer.bias.data = bias.float().contiguous()
    return _chain(c, pre, layer)


def max_pool(c: NodeContext):
    """MaxPool (its Indices output, if named, is not computed: a node reading it fails the probe)."""
    kernel = list(c.attr("kernel_shape"))
    stride, dilation = _spatial(c, kernel)
    pre, padding = _padding_step(c, kernel, stride, dilation, float("-inf"))
    ceil = bool(c.attr("ceil_mode", 0))
    if len(kernel) == 2:
        layer = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil)
    else:
        pool = {1: F.max_pool1d, 3: F.max_pool3d}[len(kernel)]
        layer = Lambda("MaxPool", pool, kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                       ceil_mode=ceil)
    return _chain(c, pre, layer)


def average_pool(c: NodeContext):
    kernel = list(c.attr("kernel_shape"))
    stride, dilation = _spatial(c, kernel)
    if any(d != 1 for d in dilation):
        raise Unsupported(f"{c.where()}: dilated average pooling is not supported")
    ceil, include = bool(c.attr("ceil_mode", 0)), bool(c.attr("count_include_pad", 0))
    pre, padding = _padding_step(c, kernel, stride, dilation, 0.0)
    if pre and not include and c.attr("auto_pad", "NOTSET") == "NOTSET":
        return [Step(MaskedAvgPool(kernel, stride, _pads(c, len(kernel)), ceil), [c.input(0)], [c.node.output[0]])]
    if pre and not include:
        raise Unsupported(f"{c.where()}: SAME auto-padding with count_include_pad=0 is not supported")
    if len(kernel) == 2:
        layer = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include)
    else:
        pool = {1: F.avg_pool1d, 3: F.avg_pool3d}[len(kernel)]
        layer = Lambda("AveragePool", pool, kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil,
                       count_include_pad=include)
    return _chain(c, pre, layer)


def clip(c: NodeContext):
    if c.opset < 11:
        low, high = c.attr("min", -FLT_MAX), c.attr("max", FLT_MAX)
    else:
        lo, hi = c.value(1), c.value(2)
        if (c.input(1) and lo is None) or (c.input(2) and hi is None):
            return Step(Lambda("Clip", _clamp), [c.input(0), c.input(1), c.input(2)], [c.node.output[0]])
        low = float(lo) if lo is not None else -FLT_MAX
        high = float(hi) if hi is not None else FLT_MAX
    low = None if low <= -FLT_MAX else float(low)
    high = None if high >= FLT_MAX else float(high)
    if low == 0.0 and high == 6.0:
        module = nn.ReLU6()
    elif low == 0.0 and high is None:
        module = nn.ReLU()
    elif low is None and high is None:
        module = nn.Identity()
    else:
        module = nn.Hardtanh(-math.inf if low is None else low, math.inf if high is None else high)
    return Step(module, [c.input(0)], [c.node.output[0]])


def _clamp(x, low=None, high=None):
    return torch.clamp(x, low, high)


def batch_norm(c: NodeContext):
    """Inference BatchNormalization (training-mode statistics outputs are not computed)."""
    if c.opset < 9 and c.attr("spatial", 1) != 1:
        raise Unsupported(f"{c.where()}: BatchNormalization with spatial=0 is not supported")
    scale, bias, mean, var = (c.value(i) for i in range(1, 5))
    if any(v is None for v in (scale, bias, mean, var)):
        raise Unsupported(f"{c.where()}: scale, bias, mean and variance must be constants")
    layer = BatchNorm(scale.numel(), eps=float(c.attr("epsilon", 1e-5)))
    layer.weight.data, layer.bias.data = scale.float().clone(), bias.float().clone()
    layer.running_mean.data, layer.running_var.data = mean.float().clone(), var.float().clone()
    return Step(layer, [c.input(0)], [c.node.output[0]])


def instance_norm(c: NodeContext):
    scale, bias = c.value(1), c.value(2)
    if scale is None or bias is None:
        raise Unsupported(f"{c.where()}: scale and bias must be constants")
    layer = nn.InstanceNorm2d(scale.numel(), eps=float(c.attr("epsilon", 1e-5)), affine=True)
    layer.weight.data, layer.bias.data = scale.float().clone(), bias.float().clone()
    return Step(layer, [c.input(0)], [c.node.output[0]])


def lrn(c: NodeContext):
    size, alpha = int(c.attr("size")), float(c.attr("alpha", 1e-4))
    beta, bias = float(c.attr("beta", 0.75)), float(c.attr("bias", 1.0))
    return nn.LocalResponseNorm(size, alpha, beta, bias) if size % 2 else LRN(size, alpha, beta, bias)


def gemm(c: NodeContext):
    a, b, bias = c.input(0), c.value(1), c.value(2)
    alpha, beta = float(c.attr("alpha", 1.0)), float(c.attr("beta", 1.0))
    trans_a, trans_b = int(c.attr("transA", 0)), int(c.attr("transB", 0))
    if b is not None and not trans_a and (not c.input(2) or bias is not None):
        weight = (b if trans_b else b.t()) * alpha
        if bias is None or bias.numel() in (1, weight.shape[0]):
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            layer.weight.data = weight.float().contiguous()
            if bias is not None:
                layer.bias.data = (bias.float().reshape(-1) * beta).expand(weight.shape[0]).clone()
            return Step(layer, [a], [c.node.output[0]])

    def general(x, y, z=None):
        x = x.t() if trans_a else x
        y = y.t() if trans_b else y
        out = alpha * (x @ y)
        return out if z is None else out + beta * z

    return Lambda("Gemm", general)


def matmul(c: NodeContext):
    b = c.value(1)
    if b is not None and b.ndim == 2:
        layer = nn.Linear(b.shape[0], b.shape[1], bias=False)
        layer.weight.data = b.t().float().contiguous()
        return Step(layer, [c.input(0)], [c.node.output[0]])
    return Lambda("MatMul", torch.matmul)


def reshape(c: NodeContext):
    shape = c.value(1)
    allowzero = bool(c.attr("allowzero", 0))
    if shape is not None:
        return Step(Reshape([int(s) for s in shape.tolist()], allowzero), [c.input(0)], [c.node.output[0]])
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


def softmax(c: NodeContext, log: bool = False):
    fn = torch.log_softmax if log else torch.softmax
    if c.opset >= 13:
        axis = int(c.attr("axis", -1))
        return Lambda("LogSoftmax" if log else "Softmax", lambda x: fn(x, axis))
    axis = int(c.attr("axis", 1))
    return Lambda("LogSoftmax" if log else "Softmax",
                  lambda x: fn(x.reshape(math.prod(x.shape[:axis % x.ndim]), -1), 1).reshape(x.shape))


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


def hard_sigmoid(c: NodeContext):
    alpha, beta = float(c.attr("alpha", 0.2)), float(c.attr("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
        return nn.Hardsigmoid()
    return Lambda("HardSigmoid", lambda x: torch.clamp(alpha * x + beta, 0, 1))


def prelu(c: NodeContext):
    return Lambda("PRelu", lambda x, slope: torch.where(x >= 0, x, x * slope))


def if_(c: NodeContext):
    return Step(If(c.subgraph(c.attrs["then_branch"]), c.subgraph(c.attrs["else_branch"])), [c.input(0)],
                list(c.node.output))


def _divide(a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _elementwise(op: str, fn: Callable) -> Callable[[NodeContext], nn.Module]:
    return lambda c: Lambda(op, fn)


def _reduce_all(fn):
    return lambda *xs: functools.reduce(fn, xs)


def _selu(x, alpha: float, gamma: float):
    return gamma * F.elu(x, alpha)


def _gelu(c: NodeContext):
    return nn.GELU(approximate="tanh" if c.attr("approximate", "none") == "tanh" else "none")


def _dropout(c: NodeContext):
    """Inference Dropout is the identity on its data output; the mask (opset < 10 always names
    one) is not computed, so mapping both outputs onto one tensor cannot happen."""
    return Step(nn.Identity(), [c.input(0)], [c.node.output[0]])


CONVERTERS: dict[str, Callable[[NodeContext], nn.Module | Step | list[Step]]] = {
    "Conv": conv, "MaxPool": max_pool, "AveragePool": average_pool,
    "GlobalAveragePool": _elementwise("GlobalAveragePool", lambda x: x.mean(tuple(range(2, x.ndim)), keepdim=True)),
    "GlobalMaxPool": _elementwise("GlobalMaxPool", lambda x: x.amax(tuple(range(2, x.ndim)), keepdim=True)),
    "BatchNormalization": batch_norm, "InstanceNormalization": instance_norm, "LRN": lrn,
    "Gemm": gemm, "MatMul": matmul,
    "Relu": lambda c: nn.ReLU(), "LeakyRelu": lambda c: nn.LeakyReLU(float(c.attr("alpha", 0.01))),
    "Clip": clip, "PRelu": prelu, "Elu": lambda c: nn.ELU(float(c.attr("alpha", 1.0))),
    "Selu": lambda c: Lambda("Selu", _selu, alpha=float(c.attr("alpha", 1.6732632423543772)),
                             gamma=float(c.attr("gamma", 1.0507009873554805))),
    "Sigmoid": lambda c: nn.Sigmoid(), "Tanh": lambda c: nn.Tanh(), "HardSigmoid": hard_sigmoid,
    "HardSwish": lambda c: nn.Hardswish(), "Softplus": lambda c: nn.Softplus(), "Gelu": _gelu,
    "Softmax": softmax, "LogSoftmax": lambda c: softmax(c, log=True),
    "Add": lambda c: Add(), "Sum": lambda c: Add(), "Mul": lambda c: Mul(),
    "Sub": _elementwise("Sub", torch.sub), "Div": _elementwise("Div", _divide),
    "Pow": _elementwise("Pow", torch.pow),
    "Max": _elementwise("Max", _reduce_all(torch.maximum)), "Min": _elementwise("Min", _reduce_all(torch.minimum)),
    "Mean": _elementwise("Mean", lambda *xs: functools.reduce(torch.add, xs) / len(xs)),
    "Sqrt": _elementwise("Sqrt", torch.sqrt), "Exp": _elementwise("Exp", torch.exp),
    "Log": _elementwise("Log", torch.log), "Neg": _elementwise("Neg", torch.neg),
    "Abs": _elementwise("Abs", torch.abs), "Reciprocal": _elementwise("Reciprocal", torch.reciprocal),
    "Floor": _elementwise("Floor", torch.floor), "Ceil": _elementwise("Ceil", torch.ceil),
    "Erf": _elementwise("Erf", torch.erf),
    "Equal": _elementwise("Equal", torch.eq), "Greater": _elementwise("Greater", torch.gt),
    "Less": _elementwise("Less", torch.lt), "GreaterOrEqual": _elementwise("GreaterOrEqual", torch.ge),
    "LessOrEqual": _elementwise("LessOrEqual", torch.le), "Not": _elementwise("Not", torch.logical_not),
    "And": _elementwise("And", torch.logical_and), "Or": _elementwise("Or", torch.logical_or),
    "Where": _elementwise("Where", torch.where),
    "Identity": lambda c: nn.Identity(), "Dropout": _dropout,
    "Flatten": flatten, "Reshape": reshape, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
    "Transpose": transpose, "Concat": concat, "Split": split, "Expand": expand, "Tile": tile,
    "Shape": shape, "Size": _elementwise("Size", lambda x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)),
    "Gather": gather, "Cast": cast, "ConstantOfShape": constant_of_shape, "Pad": pad, "Slice": slice_,
    "ReduceMean": lambda c: reduce(c, lambda x, a, k: x.mean(a, keepdim=k)),
    "ReduceSum": lambda c: reduce(c, lambda x, a, k: x.sum(a, keepdim=k)),
    "ReduceMax": lambda c: reduce(c, lambda x, a, k: x.amax(a, keepdim=k)),
    "ReduceMin": lambda c: reduce(c, lambda x, a, k: x.amin(a, keepdim=k)),
    "If": if_,
    "Constant": None,  # folded by the converter before any step is built
}
assert set(CONVERTERS) == SUPPORTED_OPS, "models.ops.SUPPORTED_OPS and the converters disagree"


def constant_attribute(node: onnx.NodeProto) -> torch.Tensor:
    """The value of a `Constant` node as a tensor (value, value_float(s), value_int(s))."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if "value" in attrs:
        return torch.from_numpy(onnx.numpy_helper.to_array(attrs["value"]).copy())
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise Unsupported(f"Constant node {node.name or node.output[0]!r}: only numeric tensor values are supported")


def as_tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        raise Unsupported("string tensors are not supported")
    return torch.from_numpy(np.ascontiguousarray(array).copy())
