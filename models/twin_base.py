"""The pieces of the ONNX → torch conversion: what a converter sees (`NodeContext`), what it
returns (`Step`s), and the torch modules for ONNX ops that torch has no layer for (explicit and
SAME padding, count-excluding average pooling, ONNX-centred LRN, any-rank BatchNorm, If).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
import torch
import torch.nn.functional as F
from torch import nn

DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT16: torch.int16, onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool,
}


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
    """ONNX Reshape (0 copies the input's dimension unless `allowzero`). With `follow_batch`
    (a constant target applied to a computed tensor), a leading 1 follows the batch when the
    input holds more than one image, so a head exported at batch 1 (`Reshape [1, -1]`) still
    works on a batch; the probe compares a batch of two with ONNX Runtime image by image."""

    def __init__(self, shape: list[int] | None, allowzero: bool, follow_batch: bool = False):
        super().__init__()
        self.shape, self.allowzero, self.follow_batch = shape, allowzero, follow_batch

    def forward(self, x, shape=None):
        target = self.shape if shape is None else [int(s) for s in shape.reshape(-1).tolist()]
        if not self.allowzero:
            target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
        if self.follow_batch and target and target[0] == 1 and x.ndim >= 1 and x.shape[0] > 1:
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
