"""Activations from truncated sub-graphs (models/truncate.py, `ModelRuntime.upto`): the same numbers as the
probe session with every layer as an output, bit for bit, from a graph that stops at the layer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from core.settings import Settings
from models import runtime
from models.runtimes import Runtimes
from models.truncate import truncate
from tests import onnx_builders


def probe_of(path, names):
    return runtime.session_from_file(path, extra_outputs=names)


@pytest.mark.parametrize("net, opset", [(onnx_builders.ResidualNet, 13), (onnx_builders.InceptionNet, 13),
                                        (onnx_builders.ClassicNet, 9)])
def test_every_node_output_of_a_small_net_equals_the_probe(tmp_path, net, opset):
    data = onnx_builders.export(onnx_builders.seeded(net()), opset=opset)
    if opset == 9:
        data = onnx_builders.zoo_style(data)  # initializers listed as inputs, a Constant node's weights
    src = tmp_path / "m.onnx"
    src.write_bytes(data)
    model = onnx.load_model_from_string(data)
    names = [node.output[0] for node in model.graph.node if node.op_type in ("Conv", "Relu", "Clip", "LeakyRelu",
                                                                             "Add", "Concat", "MaxPool")]
    probe = probe_of(src, names)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    for i, name in enumerate(names):
        info = truncate(src, name, tmp_path / "cut.onnx", probe_outputs=names[:i])
        cut = onnx.load(str(tmp_path / "cut.onnx"))
        assert [o.name for o in cut.graph.output][0] == name
        assert info.nodes == len(cut.graph.node) < len(model.graph.node)
        session = runtime.session_from_file(tmp_path / "cut.onnx")
        np.testing.assert_array_equal(session.run([name], {"image": x})[0], probe.run([name], {"image": x})[0])


def test_an_early_cut_keeps_only_the_weights_in_front_of_it(tmp_path):
    data = onnx_builders.export(onnx_builders.seeded(onnx_builders.ResidualNet()), opset=13)
    (tmp_path / "m.onnx").write_bytes(data)
    model = onnx.load_model_from_string(data)
    first_conv = next(node for node in model.graph.node if node.op_type == "Conv")
    info = truncate(tmp_path / "m.onnx", first_conv.output[0], tmp_path / "cut.onnx")
    cut = onnx.load(str(tmp_path / "cut.onnx"))
    assert [node.op_type for node in cut.graph.node] == ["Conv"]
    assert sorted(i.name for i in cut.graph.initializer) == sorted(first_conv.input[1:])
    assert info.weight_bytes < len(data) / 20
    with pytest.raises(ValueError, match="no node"):
        truncate(tmp_path / "m.onnx", "image", tmp_path / "none.onnx")  # the input: made by no node


def test_builtin_activations_from_truncated_sessions_equal_the_probe(builtin_store, builtin):
    runtimes = Runtimes(builtin_store, Settings(ort_intra_threads=1))
    rt = runtimes.get(builtin)
    names = [layer.name for layer in builtin.layers]
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    probe = rt.probe
    expected = dict(zip(names, probe.run(names, {builtin.input_name: x})))
    for name in names:  # every layer: the residual sums are where fusion would change the rounding
        np.testing.assert_array_equal(rt.layer(x, name), expected[name], err_msg=name)
    assert runtimes.sessions.held((builtin.id, builtin.onnx_sha256, f"upto:{names[-1]}"))
    early, _ = rt.upto(names[0])
    assert len(early.get_inputs()) == 1 and early.get_outputs()[0].name == names[0]


@pytest.mark.parametrize("net, opset", [(onnx_builders.ResidualNet, 13), (onnx_builders.InceptionNet, 13),
                                        (onnx_builders.ClassicNet, 9)])
def test_the_graph_cut_before_a_layer_gives_the_logits_from_its_activations(tmp_path, net, opset):
    """`cut_before`: the rest of the graph from a layer's activations on; a skip connection over the layer keeps
    the model input as a second input. Fed the layer's own activations, it gives the model's logits."""
    from models.truncate import cut_before

    data = onnx_builders.export(onnx_builders.seeded(net()), opset=opset)
    if opset == 9:
        data = onnx_builders.zoo_style(data)
    src = tmp_path / "m.onnx"
    src.write_bytes(data)
    model = onnx.load_model_from_string(data)
    logits = model.graph.output[0].name
    names = [node.output[0] for node in model.graph.node
             if node.op_type in ("Relu", "Clip", "LeakyRelu", "Add", "Concat", "MaxPool")]
    probe = probe_of(src, names)
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    expected = probe.run([logits], {"image": x})[0]
    crossing = 0
    for name in names:
        activations = probe.run([name], {"image": x})[0]
        if activations.ndim != 4 or activations.dtype != np.float32:
            continue  # a shape computation, not a layer
        inputs = cut_before(src, name, logits, tmp_path / "tail.onnx", list(activations.shape[1:]))
        assert inputs[0] == name and set(inputs[1:]) <= {"image"}
        crossing += len(inputs) > 1
        feeds = {name: activations, **({"image": x} if len(inputs) > 1 else {})}
        tail = runtime.session_from_file(tmp_path / "tail.onnx")
        np.testing.assert_allclose(tail.run([logits], feeds)[0], expected, rtol=1e-5, atol=1e-5)
        changed = activations * 0.5 + 0.25  # the tail computes from the activations it is given, not from the image
        assert not np.allclose(tail.run([logits], {**feeds, name: changed})[0], expected, atol=1e-6)
    if net is onnx_builders.ResidualNet:
        assert crossing, "a skip connection over some layer should keep the image as an input"
