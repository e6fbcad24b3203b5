"""The allow-list of ONNX ops the torch twin converts: op type → converter (`models.twin_ops`,
`models.twin_shapes`). It must name exactly `models.ops.SUPPORTED_OPS`, which the static checks
of an upload use without importing torch."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from models.ops import SUPPORTED_OPS
from models.twin_base import Add, Lambda, Mul, NodeContext, Step
from models.twin_ops import (
                             average_pool,
                             batch_norm,
                             clip,
                             conv,
                             divide,
                             dropout,
                             elementwise,
                             gelu,
                             gemm,
                             hard_sigmoid,
                             if_,
                             instance_norm,
                             lrn,
                             matmul,
                             max_pool,
                             prelu,
                             reduce_all,
                             selu,
                             softmax,
)
from models.twin_shapes import (
                             cast,
                             concat,
                             constant_of_shape,
                             expand,
                             flatten,
                             gather,
                             pad,
                             reduce,
                             reshape,
                             shape,
                             slice_,
                             split,
                             squeeze,
                             tile,
                             transpose,
                             unsqueeze,
)

CONVERTERS: dict[str, Callable[[NodeContext], nn.Module | Step | list[Step]]] = {
    "Conv": conv, "MaxPool": max_pool, "AveragePool": average_pool,
    "GlobalAveragePool": elementwise("GlobalAveragePool", lambda x: x.mean(tuple(range(2, x.ndim)), keepdim=True)),
    "GlobalMaxPool": elementwise("GlobalMaxPool", lambda x: x.amax(tuple(range(2, x.ndim)), keepdim=True)),
    "BatchNormalization": batch_norm, "InstanceNormalization": instance_norm, "LRN": lrn,
    "Gemm": gemm, "MatMul": matmul,
    "Relu": lambda c: nn.ReLU(), "LeakyRelu": lambda c: nn.LeakyReLU(float(c.attr("alpha", 0.01))),
    "Clip": clip, "PRelu": prelu, "Elu": lambda c: nn.ELU(float(c.attr("alpha", 1.0))),
    "Selu": lambda c: Lambda("Selu", selu, alpha=float(c.attr("alpha", 1.6732632423543772)),
                             gamma=float(c.attr("gamma", 1.0507009873554805))),
    "Sigmoid": lambda c: nn.Sigmoid(), "Tanh": lambda c: nn.Tanh(), "HardSigmoid": hard_sigmoid,
    "HardSwish": lambda c: nn.Hardswish(), "Softplus": lambda c: nn.Softplus(), "Gelu": gelu,
    "Softmax": softmax, "LogSoftmax": lambda c: softmax(c, log=True),
    "Add": lambda c: Add(), "Sum": lambda c: Add(), "Mul": lambda c: Mul(),
    "Sub": elementwise("Sub", torch.sub), "Div": elementwise("Div", divide),
    "Pow": elementwise("Pow", torch.pow),
    "Max": elementwise("Max", reduce_all(torch.maximum)), "Min": elementwise("Min", reduce_all(torch.minimum)),
    "Mean": elementwise("Mean", lambda *xs: functools.reduce(torch.add, xs) / len(xs)),
    "Sqrt": elementwise("Sqrt", torch.sqrt), "Exp": elementwise("Exp", torch.exp),
    "Log": elementwise("Log", torch.log), "Neg": elementwise("Neg", torch.neg),
    "Abs": elementwise("Abs", torch.abs), "Reciprocal": elementwise("Reciprocal", torch.reciprocal),
    "Floor": elementwise("Floor", torch.floor), "Ceil": elementwise("Ceil", torch.ceil),
    "Erf": elementwise("Erf", torch.erf),
    "Equal": elementwise("Equal", torch.eq), "Greater": elementwise("Greater", torch.gt),
    "Less": elementwise("Less", torch.lt), "GreaterOrEqual": elementwise("GreaterOrEqual", torch.ge),
    "LessOrEqual": elementwise("LessOrEqual", torch.le), "Not": elementwise("Not", torch.logical_not),
    "And": elementwise("And", torch.logical_and), "Or": elementwise("Or", torch.logical_or),
    "Where": elementwise("Where", torch.where),
    "Identity": lambda c: nn.Identity(), "Dropout": dropout,
    "Flatten": flatten, "Reshape": reshape, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
    "Transpose": transpose, "Concat": concat, "Split": split, "Expand": expand, "Tile": tile,
    "Shape": shape, "Size": elementwise("Size", lambda x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)),
    "Gather": gather, "Cast": cast, "ConstantOfShape": constant_of_shape, "Pad": pad, "Slice": slice_,
    "ReduceMean": lambda c: reduce(c, lambda x, a, k: x.mean(a, keepdim=k)),
    "ReduceSum": lambda c: reduce(c, lambda x, a, k: x.sum(a, keepdim=k)),
    "ReduceMax": lambda c: reduce(c, lambda x, a, k: x.amax(a, keepdim=k)),
    "ReduceMin": lambda c: reduce(c, lambda x, a, k: x.amin(a, keepdim=k)),
    "If": if_,
    "Constant": None,  # folded by the converter before any step is built
}
assert set(CONVERTERS) == SUPPORTED_OPS, "models.ops.SUPPORTED_OPS and the converters disagree"
