"""What each layer of a network is to layer-wise relevance propagation: the role that picks its rule.

Roles, by module type (torch's layers, the built-in EfficientNet's, and the ONNX twin's modules of
`models.twin_base`, whose stateless ops are `Lambda`s named by their ONNX op):

    linear       convolutions, dense layers (ONNX Conv, Gemm, MatMul by a constant): the composite's rule
    batch_norm   merged into the linear layer whose output it reads (zennit's MergeBatchNorm canonizer); one that
                 reads anything else passes relevance unchanged, as zennit's composites do
    activation   element-wise non-linearities (zennit's `Activation` types, and local response normalisation, an
                 element-wise gain): Pass
    sum          ops linear in their activation inputs (Add, Sum, Sub, Mean, average pools, ReduceMean/ReduceSum,
                 Mul or Div by a constant, Neg): Norm, each input's share of the output (the residual split); a Mul
                 of two activations, or a Div by one, is refused
    padding      part of the linear layer that reads its output, as a convolution's own padding is (the twin pads in
                 a step of its own where torch cannot): flat and z^B then count only real input values
    routing      ops that move, copy or select values (max pooling, reshapes, concatenation, slicing, comparisons):
                 the gradient routes relevance to where the values came from, as zennit leaves them
    unsupported  everything else (MatMul or Gemm of two activations, Softmax, Exp, Pow, instance normalisation,
                 an unknown module): no LRP rule, so a model that feeds one an activation is
                 refused rather than explained by a plain gradient in that place

A module of a known type has its role even when it has children (the twin's `MaskedAvgPool` pads with a child
module and pools with functions: as a whole it is an average pool); a container of an unknown type has none of its
own, its children have theirs.
"""

from __future__ import annotations

from enum import Enum

from torch import nn

from models.twin_base import LRN, Add, Concat, Lambda, MaskedAvgPool, Mul, Pad, Reshape, SamePad


class Role(Enum):
    LINEAR = "linear"
    BATCH_NORM = "batch_norm"
    ACTIVATION = "activation"
    SUM = "sum"
    PADDING = "padding"
    ROUTING = "routing"
    UNSUPPORTED = "unsupported"


ACTIVATIONS = (nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU, nn.LogSigmoid,
               nn.PReLU, nn.ReLU, nn.RReLU, nn.SELU, nn.CELU, nn.GELU, nn.Sigmoid, nn.SiLU, nn.Softplus,
               nn.Softshrink, nn.Softsign, nn.Tanh, nn.Tanhshrink, nn.Threshold, nn.LocalResponseNorm, LRN)
SUMS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
        Add, Mul, MaskedAvgPool)
PADDINGS = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
            nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
            nn.ReplicationPad3d, Pad, SamePad)
ROUTES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
          nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten, Concat, Reshape)

LAMBDA_ROLES = {
    **dict.fromkeys(("Selu", "PRelu", "HardSigmoid", "Clip"), Role.ACTIVATION),
    **dict.fromkeys(("GlobalAveragePool", "AveragePool", "ReduceMean", "ReduceSum", "Sub", "Mean", "Neg", "Div"),
                    Role.SUM),
    **dict.fromkeys(("MaxPool", "GlobalMaxPool", "ReduceMax", "ReduceMin", "Max", "Min", "Where", "Flatten",
                     "Squeeze", "Unsqueeze", "Transpose", "Split", "Slice", "Gather", "Expand", "Tile", "Output", "Cast",
                     "Shape", "Size", "ConstantOfShape", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual",
                     "Not", "And", "Or"), Role.ROUTING),
}
"""The twin's stateless ops by ONNX op name; any other (Gemm or MatMul of two activations, Softmax, Exp, Log, Pow,
Sqrt, Reciprocal, Abs, Floor, Ceil, Erf) is unsupported."""


def role_of(module: nn.Module) -> Role:
    """The role of a module by its type (UNSUPPORTED for an unknown type)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return Role.LINEAR
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return Role.BATCH_NORM
    if isinstance(module, ACTIVATIONS):
        return Role.ACTIVATION
    if isinstance(module, SUMS):
        return Role.SUM
    if isinstance(module, PADDINGS):
        return Role.PADDING
    if isinstance(module, ROUTES):
        return Role.ROUTING
    if isinstance(module, Lambda):
        return LAMBDA_ROLES.get(module.op, Role.UNSUPPORTED)
    return Role.UNSUPPORTED


def name_of(module: nn.Module) -> str:
    """How a refusal names a module: its ONNX op for the twin's stateless ops, else its type."""
    return module.op if isinstance(module, Lambda) else type(module).__name__


def linear_in_activations(module: nn.Module, active: list[bool]) -> bool:
    """Whether a `sum` module is linear in the activations it got: a product (Mul) takes one activation and a
    constant, a division (Div) an activation over a constant; every other sum any number of activations."""
    if isinstance(module, Mul):
        return sum(active) == 1
    if isinstance(module, Lambda) and module.op == "Div":
        return not any(active[1:])
    return True
