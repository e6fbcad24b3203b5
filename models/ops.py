"""The ONNX ops (default domain) that convscope can both run and differentiate.

Kept apart from the torch converters (`models.twin_table`, which checks it matches) so that
static validation of an upload does not need to import torch.
"""

SUPPORTED_OPS = frozenset({
    # layers
    "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
    "InstanceNormalization", "LRN", "Gemm", "MatMul", "Dropout", "Identity",
    # rectifiers and other activations
    "Relu", "LeakyRelu", "Clip", "PRelu", "Elu", "Selu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
    "Softplus", "Gelu", "Softmax", "LogSoftmax",
    # arithmetic and merges
    "Add", "Sum", "Mul", "Sub", "Div", "Pow", "Max", "Min", "Mean", "Sqrt", "Exp", "Log", "Neg", "Abs",
    "Reciprocal", "Floor", "Ceil", "Erf", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual",
    "Not", "And", "Or", "Where",
    # shapes and plumbing
    "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Expand", "Tile",
    "Shape", "Size", "Gather", "Cast", "Constant", "ConstantOfShape", "Pad", "Slice",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "If",
})
