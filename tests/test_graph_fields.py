"""Receptive fields of small conv/pool stacks, checked against values worked out by hand.

Per axis: size' = size + (k_eff - 1)·stride, stride' = stride·s, start' = start - pad_begin·stride,
with k_eff = (k - 1)·dilation + 1; branches and element-wise merges take the enclosing field.
"""

from __future__ import annotations

import onnx
import pytest
from onnx import helper

from models import graph
from tests.onnx_builders import conv_weights, stack_model


def fields_of(data: bytes, size: int = 32) -> tuple[dict, dict]:
    model = onnx.load_model_from_string(data)
    values = graph.probe_values(model, "x", (1, 3, size, size), ["CPUExecutionProvider"])
    layers = {layer.name: (layer.receptive_field.size, layer.receptive_field.stride, layer.receptive_field.start)
              for layer in graph.layers(model, values)}
    return layers, graph.receptive_fields(model, values)


def test_stride_dilation_padding_and_groups():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=3),
        helper.make_node("MaxPool", ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"]),
    ]
    inits = [conv_weights("w1", 3, 1, 3), conv_weights("w2", 4, 3, 3), conv_weights("w3", 4, 4, 3)]
    layers, _ = fields_of(stack_model(nodes, inits))
    assert layers == {
        "c1": (3, 1, -1),    # 3×3, pad 1
        "p1": (4, 2, -1),    # + (2-1)·1, stride 2
        "c2": (12, 2, -5),   # k_eff 5: + 4·2; start -1 - 2·2
        "c3": (16, 4, -5),   # + 2·2, stride 4, no padding
        "r3": (16, 4, -5),   # element-wise: unchanged
    }


def test_branches_asymmetric_pool_pads_and_residual_merge():
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "wb"], ["b"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
        # Caffe ceil-mode pooling: extra pad at the end only; the start is unchanged.
        helper.make_node("MaxPool", ["cat"], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Conv", ["pool", "wr"], ["r1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["pool", "r1"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["out"]),
    ]
    inits = [conv_weights("wa", 2, 3, 1), conv_weights("wb", 2, 3, 5), conv_weights("wr", 4, 4, 3)]
    layers, _ = fields_of(stack_model(nodes, inits))
    assert layers == {
        "a": (1, 1, 0),
        "b": (5, 1, -2),
        "cat": (5, 1, -2),     # the larger branch encloses the other
        "pool": (7, 2, -2),    # + 2·1
        "r1": (11, 2, -4),     # + 2·2, start -2 - 1·2
        "sum": (11, 2, -4),    # union of [-2, 5) and [-4, 7)
        "out": (11, 2, -4),
    }


def test_auto_pad_explicit_pad_op_and_per_axis_fields():
    nodes = [
        helper.make_node("AveragePool", ["x"], ["upper"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["x"], ["lower"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"),
        helper.make_node("Pad", ["x", "pads"], ["padded"], mode="constant"),
        helper.make_node("Conv", ["padded", "w"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Concat", ["upper", "lower"], ["both"], axis=1),
    ]
    pads = onnx.numpy_helper.from_array(__import__("numpy").array([0, 0, 2, 1, 0, 0, 0, 0], "int64"), "pads")
    inits = [conv_weights("w", 2, 3, 3), pads]
    layers, fields = fields_of(stack_model(nodes, inits, extra_outputs=[
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("upper", "lower", "c")]))
    # 32 px, k 3, s 2: total SAME padding = (16-1)·2 + 3 - 32 = 1; UPPER puts it at the end.
    assert layers["upper"] == (3, 2, 0)
    assert layers["lower"] == (3, 2, -1)
    assert layers["both"] == (4, 2, -1)
    h, w = fields["c"]
    assert (h.size, h.stride, h.start) == (3, 1, -2)   # 2 rows padded on top
    assert (w.size, w.stride, w.start) == (3, 1, -1)   # 1 column on the left


@pytest.mark.parametrize("opset", [9, 13])
def test_logits_are_taken_before_a_trailing_softmax(opset):
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["prob"], axis=1),
        helper.make_node("Identity", ["prob"], ["out"]),
    ]
    model = onnx.load_model_from_string(stack_model(nodes, [], opset=opset))
    assert graph.logits_name(model) == "flat"
