"""The torch twin equals ONNX Runtime on the architectures real uploads have, at opset 9 and a
current opset; rectifiers and max-pooling are stock torch modules; every layer has its module."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models import analysis, graph
from models.twin import build_twin, load_twin
from models.validate import ModelRejected
from tests.onnx_builders import (
    CURRENT_OPSET,
    ClassicNet,
    InceptionNet,
    ResidualNet,
    export,
    seeded,
    sum_branches_model,
    zoo_style,
)

NETS = {"classic": ClassicNet, "residual": ResidualNet, "inception": InceptionNet}


def onnx_file(kind: str, opset: int) -> bytes:
    dynamic = kind == "residual" or (kind == "inception" and opset >= 10)  # opset 9 cannot export dynamic ceil-mode
    return export(seeded(NETS[kind]()), opset, dynamic=dynamic)


def ort_outputs(data: bytes, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
    model = onnx.load_model_from_string(data)
    session = graph.probe_session(model, ["CPUExecutionProvider"])
    return session.run(names, {model.graph.input[0].name: x})


def twin_of(data: bytes, layers: list[str] = ()):
    model = onnx.load_model_from_string(data)
    return build_twin(model, graph.image_input(model).name, graph.logits_name(model), layers), model


@pytest.mark.parametrize("opset", [9, CURRENT_OPSET])
@pytest.mark.parametrize("kind", sorted(NETS))
def test_twin_equals_onnx_runtime(kind, opset):
    data = onnx_file(kind, opset)
    found = analysis.analyse(data, input_size=(64, 64))  # the same path as an upload, in-process
    assert all(check["agree"] for check in found["checks"]), found["checks"]
    twin, model = twin_of(data, [layer["name"] for layer in found["layers"]])
    x = np.random.default_rng(5).standard_normal((3, 3, 64, 64)).astype(np.float32)
    logits = graph.logits_name(model)
    names = [logits] + [layer["name"] for layer in found["layers"]]
    expected = dict(zip(names, ort_outputs(data, x, names)))
    seen = {}
    hooks = [twin.layer_module(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in names[1:]]
    try:
        out = twin.module(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    np.testing.assert_allclose(out.numpy(), expected[logits].reshape(3, -1), rtol=1e-4, atol=1e-5)
    for name in names[1:]:  # the module of each layer outputs exactly that layer's tensor
        np.testing.assert_allclose(seen[name].numpy(), expected[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_zoo_style_file_constant_weights_dropout_mask_and_asymmetric_pads():
    data = zoo_style(export(seeded(ClassicNet()), 9))
    model = onnx.load_model_from_string(data)
    ops = [n.op_type for n in model.graph.node]
    assert "Constant" in ops and "Dropout" in ops and "LRN" in ops
    pads = [list(a.ints) for n in model.graph.node if n.op_type == "MaxPool" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads or [0, 0, 2, 2] in pads  # ceil mode spelled as extra padding at the end
    found = analysis.analyse(data)
    assert found["checks"][0]["agree"] and found["input"]["dynamic_size"] is False
    twin, _ = twin_of(data)
    convs = [m for m in twin.module.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    # the Constant node's weights became the first convolution's weights, value for value
    constant = next(n for n in model.graph.node if n.op_type == "Constant")
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert constant.output[0] == first_conv.input[1]
    np.testing.assert_array_equal(convs[0].weight.detach().numpy(), onnx.numpy_helper.to_array(constant.attribute[0].t))


def test_sum_of_three_branches_and_masked_average_pool_at_batch_one_only():
    found = analysis.analyse(sum_branches_model(9))
    assert found["checks"][0]["agree"], found["checks"]
    assert found["max_batch"] == 1  # declared batch 1: ONNX Runtime takes one image at a time
    assert found["num_classes"] == 4 and found["logits_name"] == "fc"


def test_rectifiers_and_pools_are_stock_modules():
    classic, _ = twin_of(onnx_file("classic", 9))
    types = {type(m) for m in classic.module.modules()}
    assert {nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.Linear, nn.Conv2d} <= types
    residual, _ = twin_of(onnx_file("residual", CURRENT_OPSET))
    types = {type(m) for m in residual.module.modules()}
    assert {nn.ReLU6, nn.LeakyReLU, nn.ReLU} <= types
    assert not any(p.requires_grad for p in residual.module.parameters())
    assert not residual.module.training


def test_clip_spellings():
    from onnx import helper

    from tests.onnx_builders import stack_model

    def clip_module(opset, **bounds):
        if opset >= 11:
            inits = [onnx.numpy_helper.from_array(np.array(v, np.float32), k) for k, v in bounds.items()]
            node = helper.make_node("Clip", ["x", "min" if "min" in bounds else "", "max" if "max" in bounds else ""],
                                    ["y"])
        else:
            inits, node = [], helper.make_node("Clip", ["x"], ["y"], **bounds)
        twin, _ = twin_of(stack_model([node], inits, opset=opset))
        return twin.layer_module("y")

    for opset in (9, 13):
        assert type(clip_module(opset, min=0.0, max=6.0)) is nn.ReLU6
        assert type(clip_module(opset, min=0.0)) is nn.ReLU
        hardtanh = clip_module(opset, min=-1.0, max=2.0)
        assert type(hardtanh) is nn.Hardtanh and (hardtanh.min_val, hardtanh.max_val) == (-1.0, 2.0)


def test_a_wrong_twin_is_refused_naming_the_first_layer_that_differs(monkeypatch):
    from models import twin_table

    monkeypatch.setitem(twin_table.CONVERTERS, "LRN", lambda c: nn.Identity())
    with pytest.raises(ModelRejected) as refused:
        analysis.analyse(onnx_file("classic", 9))
    assert refused.value.code == "twin_mismatch"
    assert "LRN" in refused.value.message and "first at layer" in refused.value.message


def test_builtin_model_twin_matches_at_two_sizes(builtin, builtin_store):
    data = builtin_store.blob_path(builtin.onnx_sha256).read_bytes()
    twin = load_twin(builtin, data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for size in (224, 160):
        x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
        expected = session.run(None, {builtin.input_name: x})[0]
        got = twin.module(torch.from_numpy(x)).numpy()
        assert np.abs(got - expected).max() <= analysis.tolerance(expected)
    assert sum(isinstance(m, nn.ReLU6) for m in twin.module.modules()) == 33
    assert isinstance(twin.layer_module(builtin.layers[1].name), nn.ReLU6)
    assert isinstance(twin.layer_module(builtin.layers[0].name), nn.Conv2d)



def test_gradients_reach_the_input_and_rectifier_backward_rules_can_be_swapped():
    """What the gradient methods do: d logit / d input, then the same with every ReLU's backward
    rule replaced (guided backprop: only positive gradients pass)."""
    twin, _ = twin_of(onnx_file("residual", CURRENT_OPSET))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))

    def gradient() -> torch.Tensor:
        x_ = x.clone().requires_grad_(True)
        twin.module(x_)[0, 2].backward()
        return x_.grad

    plain = gradient()
    # d logit / d x along random directions v equals the central difference of the logit, taken on a
    # float64 copy of the twin (whose forward equals ONNX Runtime, above) with steps too small to cross a kink
    reference = copy.deepcopy(twin.module).double()
    for seed in (1, 2, 3):
        v = torch.from_numpy(np.random.default_rng(seed).standard_normal(tuple(x.shape)))
        with torch.no_grad():
            up, down = (reference(x.double() + sign * 1e-6 * v)[0, 2] for sign in (1, -1))
        slope = float(up - down) / 2e-6
        assert float((plain.double() * v).sum()) == pytest.approx(slope, rel=1e-4, abs=1e-9), seed
    rectifiers = [m for m in twin.module.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU))]
    hooks = [m.register_full_backward_hook(lambda m, gin, gout: (gin[0].clamp(min=0),)) for m in rectifiers]
    try:
        guided = gradient()
    finally:
        for h in hooks:
            h.remove()
    assert not torch.allclose(plain, guided)
    assert torch.equal(gradient(), plain)  # nothing left behind


def test_batch_one_reshape_head_and_constant_reshapes():
    """Caffe2-era files: a per-channel scale reshaped from a constant to 1×C×1×1, and a head
    `Reshape [1, -1]` frozen at batch 1; the twin still runs a batch (checked against ORT per image)."""
    from onnx import helper, numpy_helper

    from tests.onnx_builders import conv_weights, stack_model

    rng = np.random.default_rng(1)
    inits = [conv_weights("w", 4, 3, 3), numpy_helper.from_array(rng.random(4).astype(np.float32), "scale"),
             numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "cshape"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
             numpy_helper.from_array(rng.standard_normal((3, 4 * 15 * 15)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Reshape", ["scale", "cshape"], ["scale4"]),
             helper.make_node("Mul", ["c", "scale4"], ["scaled"]),
             helper.make_node("MaxPool", ["scaled"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "flat"], ["v"]),
             helper.make_node("Gemm", ["v", "fc", "fc_b"], ["scores"], transB=1)]
    found = analysis.analyse(stack_model(nodes, inits, opset=9))
    assert found["max_batch"] == 1 and found["checks"][0]["agree"] and found["num_classes"] == 3


def test_a_gather_whose_scalar_index_is_a_stored_initializer():
    """`Shape` → `Gather` (index 0 stored as a 0-d initializer, not a `Constant` node) → `Unsqueeze` → `Concat` →
    `Reshape`: the flatten of many exports. The index stays a scalar in the twin (it once became 1-d, and the
    Concat failed on a batch of two), and the twin agrees with ONNX Runtime."""
    from onnx import helper, numpy_helper

    from tests.onnx_builders import conv_weights, stack_model

    rng = np.random.default_rng(1)
    inits = [conv_weights("w", 4, 3, 3), numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array([0], np.int64), "first"),
             numpy_helper.from_array(rng.standard_normal((3, 4 * 30 * 30)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "first"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["flat"], axis=0),
             helper.make_node("Reshape", ["r", "flat"], ["v"]),
             helper.make_node("Gemm", ["v", "fc", "fc_b"], ["scores"], transB=1)]
    found = analysis.analyse(stack_model(nodes, inits, opset=13))
    assert found["num_classes"] == 3 and all(check["agree"] for check in found["checks"])
