"""LRP equals zennit's `Gradient` attributor with the same composite and the canonizers it needs, on the small net and
on the built-in EfficientNet-Lite0; relevance is conserved through the residual sums of an ONNX twin; an op without a
rule is refused; and nothing outlives a call."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from core.errors import Invalid
from core.kinds.attribution import LrpParams
from core.kinds.registry import KINDS
from models import graph
from models.twin import build_twin
from models.twin_base import Add
from tests.onnx_builders import (
    CURRENT_OPSET,
    ClassicNet,
    InceptionNet,
    ResidualNet,
    conv_weights,
    export,
    seeded,
    stack_model,
    sum_branches_model,
)
from tests.workers.lrp_reference import ZENNIT, bounds_of, builtin_canonizers, reference
from tests.workers.test_methods_builtin import global_hooks, module_state
from workers.methods import method_of
from workers.methods.attribution import lrp
from workers.methods.mechanics import lrp as mechanics
from workers.methods.mechanics.lrp import input_relevance
from workers.methods.mechanics.lrp_composites import composite
from workers.methods.mechanics.lrp_layers import Role
from workers.methods.task import Task


def ours(network, x, **params):
    resolved = KINDS["lrp"].params(**params).resolve(network.record)
    return method_of(KINDS["lrp"])(Task(network, x, resolved))


def assert_same_relevance(attribution: np.ndarray, expected: np.ndarray) -> None:
    scale = float(np.abs(expected).max())
    assert scale > 0, "the reference map is empty: the comparison would say nothing"
    np.testing.assert_allclose(attribution, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", list(ZENNIT))
def test_lrp_equals_zennit_on_the_small_net(zennit, small_net, small_input, name):
    out = ours(small_net, small_input, target=3, composite=name)
    expected = reference(zennit, small_net, small_net.module, small_input, 3, name)
    assert out.attribution.shape == (3, 16, 16) and out.attribution.dtype == np.float32
    assert_same_relevance(out.attribution, expected)
    assert out.metrics["target"] == 3 and out.metrics["target_label"] == "class3"


@pytest.mark.parametrize("name", list(ZENNIT))
def test_lrp_equals_zennit_on_the_builtin_model(zennit, lite0, cat, name):
    out = ours(lite0, cat, composite=name)
    target = out.metrics["target"]
    module = copy.deepcopy(lite0.module)  # zennit's canonizers write parameters: never the shared network
    expected = reference(zennit, lite0, module, cat, target, name, builtin_canonizers(zennit))
    assert out.attribution.shape == tuple(cat.shape[1:])
    assert_same_relevance(out.attribution, expected)
    assert out.metrics["target_logit"] == pytest.approx(float(lite0.module(cat)[0, target]), rel=1e-5)


def test_the_box_is_pixels_0_and_255_under_the_preprocessing(lite0, small_net):
    low, high = lrp.input_bounds(lite0.record, torch.zeros(1, 3, 4, 4))
    assert low.flatten().tolist() == [-1.0] * 3 and high.flatten().tolist() == [1.0] * 3  # 0–255 → [-1, 1]
    low, high = lrp.input_bounds(small_net.record, torch.zeros(1, 3, 4, 4))
    torch.testing.assert_close((low, high), bounds_of(small_net.record))
    assert low.flatten().tolist() == pytest.approx([-2.0, -2.0, -2.0]) and high.flatten()[0] == pytest.approx(3.0)


def twin_of(data: bytes):
    model = onnx.load_model_from_string(data)
    return build_twin(model, graph.image_input(model).name, graph.logits_name(model)).module


SUMS = {  # ONNX file, input (N, side), Add modules in its twin, composite
    "residual-9": (lambda: export(seeded(ResidualNet()), 9, dynamic=True), (2, 64), 3, "epsilon_plus"),
    f"residual-{CURRENT_OPSET}": (lambda: export(seeded(ResidualNet()), CURRENT_OPSET, dynamic=True), (2, 64), 3,
                                  "epsilon_plus"),
    # a 3-input Sum of three convolutions of the input, average pooling that skips its padding; flat in the three
    # first layers: z⁺ would drop the relevance of the 1×1 convolution's outputs that have no positive contribution
    "sum-branches": (sum_branches_model, (1, 16), 1, "epsilon_plus_flat"),
}


@pytest.mark.parametrize("model", list(SUMS))
def test_relevance_is_conserved_through_residual_sums(model, monkeypatch):
    """ResNet in miniature (BatchNorm folded by the export, residual Adds, ReLU6, LeakyReLU, global average pool), and
    three branches summed: biases zeroed, the input relevance sums to the output relevance, the target's one-hot (1),
    within 1 %."""
    data, (n, side), adds, name = SUMS[model]
    module = twin_of(data())
    assert sum(isinstance(m, Add) for m in module.modules()) == adds
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.bias is not None:
                layer.bias.zero_()
    x = torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(4))
    relevance, info = input_relevance(module, x, None, composite(name))
    assert relevance.sum((1, 2, 3)).tolist() == pytest.approx([1.0] * n, rel=1e-2)
    assert info["relevance_sum"] == pytest.approx(1.0, rel=1e-2)

    # a residual Add that copied relevance to both its inputs (the plain gradient) would not conserve it: neither
    # its module nor the `torch.add` inside it given the Norm rule
    role_of = mechanics.role_of
    monkeypatch.setattr(mechanics, "role_of", lambda m: Role.ROUTING if isinstance(m, Add) else role_of(m))
    monkeypatch.setattr(mechanics._FunctionalSums, "ADDITIONS", ())
    copied, _ = input_relevance(module, x, info["target"], composite(name))
    assert abs(float(copied[0].sum()) - 1.0) > 0.1


@pytest.mark.parametrize("net", [ClassicNet, InceptionNet])
def test_twins_of_other_architectures_are_explained(net):
    """Local response normalisation (Pass), dropout, concatenated branches, max and average pooling."""
    module = twin_of(export(seeded(net()), CURRENT_OPSET))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    relevance, _ = input_relevance(module, x, None, composite("epsilon_plus_flat"))
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0


def swish_model(constant_gate: bool) -> bytes:
    """Conv → x · sigmoid(x) (a product of two activations; with `constant_gate`, x · 0.5) → pool → Gemm."""
    gate = "half" if constant_gate else "gate"
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["conv"], ["gate"]),
             helper.make_node("Mul", ["conv", gate], ["swish"]),
             helper.make_node("GlobalAveragePool", ["swish"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    inits = [conv_weights("w", 4, 3, 3), numpy_helper.from_array(np.ones((5, 4), np.float32), "fc"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    return stack_model(nodes, inits, size=16)


def test_an_op_without_a_rule_is_refused_and_leaves_nothing_behind():
    module = twin_of(swish_model(constant_gate=False))
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    before, hooks = module_state(module), global_hooks()
    with pytest.raises(Invalid) as refused:
        input_relevance(module, x, 0, composite("epsilon_plus_flat"))
    assert refused.value.code == "unsupported_for_lrp" and "op Mul" in refused.value.message
    assert module_state(module) == before and global_hooks() == hooks

    scaled = twin_of(swish_model(constant_gate=True))  # a product with a constant is a sum of contributions
    before = module_state(scaled)
    relevance, _ = input_relevance(scaled, x, 0, composite("epsilon_plus_flat"))
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    assert module_state(scaled) == before and global_hooks() == hooks


def parameters_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def test_nothing_outlives_a_call(lite0, cat):
    small = torch.nn.functional.interpolate(cat, size=(64, 64), mode="bilinear")
    before, hooks, weights = module_state(lite0.module), global_hooks(), parameters_of(lite0.module)
    for name in ZENNIT:
        lrp.run(Task(lite0, small, LrpParams(composite=name)))
        assert module_state(lite0.module) == before and global_hooks() == hooks

    # A call that fails inside the method, after its rules are set: the first convolution refuses 2 channels.
    with pytest.raises(RuntimeError, match=r"expected input\[.*\] to have 3 channels, but got 2 channels"):
        lrp.run(Task(lite0, small[:, :2], LrpParams()))
    assert module_state(lite0.module) == before and global_hooks() == hooks
    after = parameters_of(lite0.module)  # BatchNorm merged on the fly: no parameter or statistic was written
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)


@pytest.fixture(scope="module")
def lite0_twin(builtin, builtin_store) -> nn.Module:
    """The torch twin of the built-in model's ONNX file: BatchNorm folded into the convolutions by the export, `Add`
    modules for the residual sums, SAME padding as steps of their own computed from `Shape` at run time."""
    from models.twin import load_twin

    return load_twin(builtin, builtin_store.read_blob(builtin.onnx_sha256)).module


@pytest.mark.parametrize("name", list(ZENNIT))
def test_the_twin_of_the_builtin_model_is_explained_as_the_builtin_model(lite0, lite0_twin, cat, name):
    """The twin's path (modules by role, folded BatchNorm, padding taken into the first layer) against the torch path
    that zennit checked above, to the same tolerance (the folded BatchNorm rounds differently)."""
    rules = composite(name, bounds=lrp.input_bounds(lite0.record, cat))
    expected, info = input_relevance(lite0.module, cat, None, rules)
    relevance, _ = input_relevance(lite0_twin, cat, info["target"], rules)
    assert_same_relevance(relevance[0].numpy(), expected[0].numpy())
