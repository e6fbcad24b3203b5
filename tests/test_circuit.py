"""The `circuit` route: expanded weights into a unit (models/circuit.py).

Oracles: for adjacent convolutions the kernel slice itself, read from the ONNX initializers, equal exactly; through
rectifiers, residual sums and pooling, the autograd Jacobian of the torch twin (models/twin.py) with every rectifier
replaced by the identity, to 1e-5."""

from __future__ import annotations

from urllib.parse import quote

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from models import graph
from models.circuit import CircuitUnsupported, WeightGraph
from models.twin import build_twin
from tests.onnx_builders import conv_weights as onnx_conv_weights
from tests.onnx_builders import stack_model, sum_branches_model

RECTIFIERS = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardtanh, torch.nn.LeakyReLU)


def circuit(client, layer: str, channel: int, **query):
    answer = client.get(f"/v1/models/efficientnet-lite0/layers/{quote(layer, safe='')}/units/{channel}/circuit",
                        params=query)
    assert answer.status_code == 200, answer.text
    return answer


def initializer(model: onnx.ModelProto, layer: str) -> np.ndarray:
    """The weights of the Conv producing `layer`, straight from the file's initializers."""
    conv = next(node for node in model.graph.node if layer in node.output)
    assert conv.op_type == "Conv"
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == conv.input[1])


@pytest.fixture(scope="module")
def lite0_onnx(builtin, builtin_store) -> onnx.ModelProto:
    return onnx.load_model(str(builtin_store.blob_file(builtin.onnx_sha256)))


@pytest.mark.parametrize(("layer", "source"), [("_blocks.2._bn0", "_blocks.1._bn2"),  # 1×1 conv after a conv
                                               ("_blocks.2._bn2", "_blocks.2._relu1"),  # 1×1 after ReLU6 of a dw conv
                                               ("_blocks.4._bn1", "_blocks.4._relu0")])  # depthwise 5×5
def test_adjacent_convolutions_give_the_kernel_slice_exactly(client, builtin, lite0_onnx, layer, source):
    kernel = initializer(lite0_onnx, layer)
    channels = kernel.shape[0]
    for channel in (0, 7, channels - 1):
        answer = circuit(client, layer, channel, k=256).json()
        assert answer["sources"] == [source] and answer["channel"] == channel
        inputs = answer["inputs"]
        norms = [i["norm"] for i in inputs]
        assert norms == sorted(norms, reverse=True)
        for unit in inputs:
            assert unit["layer"] == source
            window = np.asarray(unit["weights"], np.float32)
            if kernel.shape[1] == 1:  # depthwise: one input channel per unit, the others 0
                expected = kernel[channel, 0] if unit["channel"] == channel else np.zeros_like(kernel[0, 0])
            else:
                expected = kernel[channel, unit["channel"]]
            assert np.array_equal(window, expected), (channel, unit["channel"])
            assert unit["weight"] == pytest.approx(float(expected.sum()), rel=1e-6, abs=1e-7)
        if kernel.shape[1] > 1:
            assert {i["channel"] for i in inputs} == set(range(kernel.shape[1]))


def jacobian(twin, layer: str, channel: int, sources: list[str], x: torch.Tensor, input_name: str) -> dict[str, np.ndarray]:
    """∂ layer[channel] at its grid's centre / ∂ each source, by autograd on the twin with rectifiers as identity."""
    leaves, seen, handles = {}, {}, []

    def replace(name):
        def hook(_module, _inputs, out):
            leaves[name] = out.detach().clone().requires_grad_(True)
            return leaves[name]
        return hook

    swapped = [m for m in twin.module.modules() if isinstance(m, RECTIFIERS)]
    try:
        for m in swapped:
            m.forward = lambda t: t
        for name in sources:
            if name != input_name:
                handles.append(twin.layer_module(name).register_forward_hook(replace(name)))
        handles.append(twin.layer_module(layer).register_forward_hook(lambda _m, _i, out: seen.update(out=out)))
        if input_name in sources:
            leaves[input_name] = x.requires_grad_(True)
        twin.module(x)
        out = seen["out"]
        out[0, channel, out.shape[2] // 2, out.shape[3] // 2].backward()
    finally:
        for m in swapped:
            del m.forward
        for handle in handles:
            handle.remove()
    return {name: leaf.grad[0].numpy() for name, leaf in leaves.items()}


def placed(windows, shape) -> np.ndarray:
    """A source's windows put on its whole grid (C×H×W), zero elsewhere."""
    _, channels, height, width = shape
    full = np.zeros((channels, height, width), np.float32)
    top, left = windows.top, windows.left
    _, h, w = windows.values.shape
    ys, xs = slice(max(top, 0), min(top + h, height)), slice(max(left, 0), min(left + w, width))
    full[:, ys, xs] = windows.values[:, ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]
    return full


@pytest.fixture(scope="module")
def lite0_twin(lite0_onnx, builtin):
    return build_twin(lite0_onnx, builtin.input_name, builtin.logits_name, [layer.name for layer in builtin.layers])


@pytest.fixture(scope="module")
def lite0_weights(client, builtin, builtin_store):
    return WeightGraph.load(builtin_store.blob_file(builtin.onnx_sha256), builtin)


@pytest.mark.parametrize(("layer", "source"), [("_blocks.4", "_blocks.3._bn2"),  # 1×1, ReLU6, dw 5×5, ReLU6, 1×1, skip
                                               ("_blocks.2", None),  # default: the skip and the branch's ReLU6
                                               ("_blocks.2._relu1", None),  # through its own ReLU6
                                               ("_relu0", None),  # the stem from the image, through SAME padding
                                               ("_blocks.5._bn1", "_blocks.4")])  # stride 2 through ReLU6
def test_through_rectifiers_the_weights_are_the_jacobian_with_rectifiers_as_identity(lite0_twin, lite0_weights,
                                                                                     builtin, layer, source):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
    for channel in (0, 5):
        windows = lite0_weights.expanded(layer, channel, source)
        expected = jacobian(lite0_twin, layer, channel, list(windows), x.clone(), builtin.input_name)
        assert set(expected) == set(windows)
        for name, window in windows.items():
            found = placed(window, lite0_weights.shapes[name])
            np.testing.assert_allclose(found, expected[name], rtol=1e-5, atol=1e-5 * np.abs(expected[name]).max())


def test_sum_of_branches_and_average_pooling_with_asymmetric_pads():
    data = sum_branches_model()
    model = onnx.load_model_from_string(data)
    values = graph.probe_values(model, "data", (1, 3, 16, 16), ["CPUExecutionProvider"])
    listed = [layer.name for layer in graph.layers(model, values)]
    weights = WeightGraph.of(model, "data", (1, 3, 16, 16), listed)
    twin = build_twin(model, "data", graph.logits_name(model), listed)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32))
    for channel in range(6):
        windows = weights.expanded("pooled", channel)
        assert list(windows) == ["data"]
        expected = jacobian(twin, "pooled", channel, ["data"], x.clone(), "data")["data"]
        np.testing.assert_allclose(placed(windows["data"], weights.shapes["data"]), expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())


def test_png_json_and_refusals(client):
    layer = quote("_blocks.2", safe="")
    answer = circuit(client, "_blocks.2", 3, k=4)
    body = answer.json()
    assert len(body["inputs"]) == 4 and body["position"] == [28, 28]
    assert body["sources"] == ["_blocks.1._bn2", "_blocks.2._relu1"]
    skip = [i for i in circuit(client, "_blocks.2", 3, k=200).json()["inputs"] if i["layer"] == "_blocks.1._bn2"]
    assert [(i["channel"], i["weights"]) for i in skip if i["norm"] > 0] == [(3, [[1.0]])]  # the identity skip
    assert "forward;dur=" in answer.headers["server-timing"]
    png = circuit(client, "_blocks.2", 3, k=4, format="png")
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    base = "/v1/models/efficientnet-lite0/layers"
    for url, status, code in [(f"{base}/nope/units/0/circuit", 422, "unknown_layer"),
                              (f"{base}/{layer}/units/24/circuit", 422, "channel_out_of_range"),
                              (f"{base}/{layer}/units/0/circuit?source=nope", 422, "unknown_layer"),
                              (f"{base}/{layer}/units/0/circuit?source=_blocks.9", 422, "no_circuit"),
                              (f"{base}/{layer}/units/0/circuit?k=0", 422, "validation_error"),
                              ("/v1/models/nope/layers/x/units/0/circuit", 404, "model_not_found")]:
        answer = client.get(url)
        assert answer.status_code == status and answer.json()["error"]["code"] == code, (url, answer.text)


def crafted(nodes, inits) -> tuple[onnx.ModelProto, list[str]]:
    model = onnx.load_model_from_string(stack_model(nodes, inits, size=12, channels=3))
    values = graph.probe_values(model, "x", (1, 3, 12, 12), ["CPUExecutionProvider"])
    return model, [layer.name for layer in graph.layers(model, values)]


def test_batchnorm_concat_average_pool_and_strides_against_autograd():
    rng = np.random.default_rng(5)
    bn = [numpy_helper.from_array(v.astype(np.float32), name) for v, name in
          [(rng.uniform(0.5, 1.5, 4), "gamma"), (rng.uniform(-0.2, 0.2, 4), "beta"), (rng.uniform(-0.5, 0.5, 4), "mean"),
           (rng.uniform(0.5, 2, 4), "var")]]
    inits = [onnx_conv_weights("w1", 4, 3, 3), onnx_conv_weights("w2", 3, 4, 1, seed=1),
             onnx_conv_weights("w3", 5, 7, 3, seed=2), *bn]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["branch"]),
             helper.make_node("AveragePool", ["r"], ["pooled"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              count_include_pad=1),
             helper.make_node("Concat", ["branch", "pooled"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w3"], ["out"], pads=[1, 1, 1, 1], strides=[2, 2])]
    model, listed = crafted(nodes, inits)
    weights = WeightGraph.of(model, "x", (1, 3, 12, 12), listed)
    twin = build_twin(model, "x", "out", listed)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((1, 3, 12, 12)).astype(np.float32))
    assert weights.plan("out").sources == ["cat"] and weights.plan("cat").sources == ["r"]  # both branches read r
    for layer, source in (("out", "x"), ("out", "r"), ("cat", None), ("out", None)):
        for channel in range(5):
            windows = weights.expanded(layer, channel, source)
            assert windows
            expected = jacobian(twin, layer, channel, list(windows), x.clone(), "x")
            for name, window in windows.items():
                np.testing.assert_allclose(placed(window, weights.shapes[name]), expected[name], rtol=1e-5,
                                           atol=1e-5 * np.abs(expected[name]).max())


def test_a_gate_is_refused_with_422():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c1"], ["s"]),
             helper.make_node("Mul", ["c1", "s"], ["gated"]),
             helper.make_node("Conv", ["gated", "w2"], ["out"])]
    model, listed = crafted(nodes, [onnx_conv_weights("w1", 4, 3, 3), onnx_conv_weights("w2", 3, 4, 1)])
    weights = WeightGraph.of(model, "x", (1, 3, 12, 12), listed)
    assert weights.expanded("out", 0)  # from `gated`: the Conv next to it
    with pytest.raises(CircuitUnsupported) as refused:
        weights.expanded("out", 0, source="c1")
    assert refused.value.status == 422 and refused.value.code == "circuit_unsupported"
