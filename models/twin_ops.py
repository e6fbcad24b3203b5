"""ONNX op → torch module, one converter per op type; `CONVERTERS` is the allow-list of ops.

Every node becomes one or more `Step`s (a module, the tensor names it reads, the names it
writes). Rectifiers and max-pooling become the stock torch modules (`nn.ReLU`, `nn.ReLU6`,
`nn.Hardtanh`, `nn.LeakyReLU`, `nn.MaxPool2d`) so gradient methods can find them by type
and swap their backward rule; weights become parameters of `nn.Conv2d`, `nn.Linear`,
`nn.BatchNorm2d`-style modules. Padding that torch layers cannot express (asymmetric, or
TF-style SAME computed at run time) becomes a separate padding step before the layer.

Semantics follow the ONNX operator docs for the opset the model imports (attributes that
moved to inputs in later opsets are read from either place). Layers, activations and arithmetic
are here; reshaping and indexing ops in `models.twin_shapes`; the modules in `models.twin_base`;
the table from op type to converter in `models.twin_table`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from models.twin_base import (
    LRN,
    BatchNorm,
    If,
    Lambda,
    MaskedAvgPool,
    NodeContext,
    Pad,
    SamePad,
    Step,
    Unsupported,
)

FLT_MAX = 3.0e38


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


def softmax(c: NodeContext, log: bool = False):
    fn = torch.log_softmax if log else torch.softmax
    if c.opset >= 13:
        axis = int(c.attr("axis", -1))
        return Lambda("LogSoftmax" if log else "Softmax", lambda x: fn(x, axis))
    axis = int(c.attr("axis", 1))
    return Lambda("LogSoftmax" if log else "Softmax",
                  lambda x: fn(x.reshape(math.prod(x.shape[:axis % x.ndim]), -1), 1).reshape(x.shape))



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


def divide(a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def elementwise(op: str, fn: Callable) -> Callable[[NodeContext], nn.Module]:
    return lambda c: Lambda(op, fn)


def reduce_all(fn):
    return lambda *xs: functools.reduce(fn, xs)


def selu(x, alpha: float, gamma: float):
    return gamma * F.elu(x, alpha)


def gelu(c: NodeContext):
    return nn.GELU(approximate="tanh" if c.attr("approximate", "none") == "tanh" else "none")


def dropout(c: NodeContext):
    """Inference Dropout is the identity on its data output; the mask (opset < 10 always names
    one) is not computed, so mapping both outputs onto one tensor cannot happen."""
    return Step(nn.Identity(), [c.input(0)], [c.node.output[0]])


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
    return torch.from_numpy(np.array(array, order="C", copy=True))  # not ascontiguousarray: it makes a scalar 1-d
