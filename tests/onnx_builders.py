"""Small classifiers built in the tests and exported to ONNX, and crafted ONNX files.

The torch nets cover the architectures of real uploads (a classic conv-ReLU-LRN-maxpool net
with a Softmax head, a residual net with BatchNorm and ReLU6/LeakyReLU, an Inception-style
branchy net); `zoo_style` rewrites an export into what old model-zoo files look like (weights as
Constant nodes, Dropout with a mask output, Caffe ceil-mode pooling as asymmetric pads).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

CURRENT_OPSET = 20


class _LRN(torch.autograd.Function):
    """Exports as the ONNX `LRN` op (torch decomposes `nn.LocalResponseNorm` into a dozen ops)."""

    @staticmethod
    def forward(ctx, x):
        return nn.functional.local_response_norm(x, 5, 1e-4, 0.75, 2.0)

    @staticmethod
    def symbolic(g, x):
        return g.op("LRN", x, size_i=5, alpha_f=1e-4, beta_f=0.75, bias_f=2.0)


class LRN(nn.Module):
    def forward(self, x):
        return _LRN.apply(x)


class ClassicNet(nn.Module):
    """AlexNet in miniature: conv-ReLU-LRN-maxpool, ceil-mode pooling, dropout, FC head, Softmax."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(), LRN(), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(16, 24, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(24, 32, 3, padding=2, dilation=2), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(64, classes))

    def forward(self, x):
        x = self.features(x)
        return torch.softmax(self.classifier(x.view(x.size(0), -1)), dim=1)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.act = nn.ReLU6()
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class ResidualNet(nn.Module):
    """ResNet in miniature: BatchNorm, ReLU6, LeakyReLU, residual adds, global average pool."""

    def __init__(self, classes: int = 7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1))
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 1))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Inception(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 8, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, 8, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, 6, 1))

    def forward(self, x):
        return torch.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


class InceptionNet(nn.Module):
    """GoogLeNet in miniature: a stem, two Inception modules (four branches, Concat), avg-pool head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.inc1, self.pool, self.inc2 = Inception(16), nn.MaxPool2d(3, 2, ceil_mode=True), Inception(32)
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.4), nn.LazyLinear(classes))

    def forward(self, x):
        return self.head(self.inc2(self.pool(self.inc1(self.stem(x)))))


def seeded(net: nn.Module, size: int = 64, seed: int = 0) -> nn.Module:
    """Random but reproducible weights, non-trivial BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    net(torch.zeros(1, 3, size, size))  # materialise lazy layers
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def export(net: nn.Module, opset: int, size: int = 64, dynamic: bool = False) -> bytes:
    """`torch.onnx.export(dynamo=False)`: input `image`, output `scores`."""
    out = io.BytesIO()
    axes = {"image": {0: "n", 2: "h", 3: "w"}, "scores": {0: "n"}} if dynamic else {"image": {0: "n"}, "scores": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), out, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["scores"], dynamic_axes=axes)
    return out.getvalue()


def zoo_style(data: bytes) -> bytes:
    """Rewrite an opset-9 export the way old model-zoo files look: initializers also listed as
    inputs, the first Conv's weights given by a Constant node, a Dropout with a mask output in
    the head, the first MaxPool's ceil mode spelled as asymmetric pads."""
    model = onnx.load_model_from_string(data)
    graph = model.graph
    graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in graph.initializer)
    conv = next(n for n in graph.node if n.op_type == "Conv")
    weight = next(i for i in graph.initializer if i.name == conv.input[1])
    graph.initializer.remove(weight)
    graph.input.remove(next(i for i in graph.input if i.name == weight.name))
    graph.node.insert(0, helper.make_node("Constant", [], [weight.name], value=weight))
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    dropped = gemm.input[0] + "_dropped"
    index = list(graph.node).index(gemm)
    graph.node.insert(index, helper.make_node("Dropout", [gemm.input[0]], [dropped, dropped + "_mask"], ratio=0.5))
    gemm.input[0] = dropped
    return model.SerializeToString()


def sum_branches_model(opset: int = 9) -> bytes:
    """Crafted with onnx.helper (IR 3 style): three conv branches merged by a 3-input `Sum`,
    an AveragePool with asymmetric pads (count_include_pad=0), Flatten + Gemm + Softmax."""
    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def weight(name, shape):
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name))
        return name

    for i, (k, pad) in enumerate([(1, 0), (3, 1), (5, 2)]):
        nodes.append(helper.make_node("Conv", ["data", weight(f"w{i}", (6, 3, k, k)), weight(f"b{i}", (6,))],
                                      [f"branch{i}"], kernel_shape=[k, k], pads=[pad] * 4))
    nodes += [
        helper.make_node("Sum", ["branch0", "branch1", "branch2"], ["merged"]),
        helper.make_node("Relu", ["merged"], ["relu"]),
        helper.make_node("AveragePool", ["relu"], ["pooled"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", weight("fc_w", (4, 6 * 8 * 8)), weight("fc_b", (4,))], ["fc"], transB=1),
        helper.make_node("Softmax", ["fc"], ["prob"], axis=1),
    ]
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 16, 16])]
    inputs += [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "sum_branches", inputs,
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="crafted")
    model.ir_version = 3 if opset <= 8 else 4
    return model.SerializeToString()


def stack_model(nodes, inits, size: int = 32, channels: int = 3, opset: int = 13, extra_outputs=()) -> bytes:
    """A crafted graph: input `x` (1×C×size×size), output the last node's first output."""
    out = nodes[-1].output[0]
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])
    graph = helper.make_graph(nodes, "stack", [image],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)] + list(extra_outputs), inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    done = onnx.shape_inference.infer_shapes(model).graph
    inferred = {v.name: v for v in list(done.value_info) + list(done.output) if v.type.tensor_type.HasField("shape")}
    for output in model.graph.output:  # declare the outputs' shapes, as exporters do
        if output.name in inferred:
            output.type.CopyFrom(inferred[output.name].type)
    return model.SerializeToString()


def conv_weights(name: str, cout: int, cin: int, k: int, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.2, name)
