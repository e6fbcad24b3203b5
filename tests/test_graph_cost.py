"""Graphs with bounded cost: shapes that follow from the input's shape alone, a recorded per-image cost with
limits, and a time limit on forward runs (models.data_dependence, models.cost, models.deadline)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from core.settings import Settings
from core.stores.models import ModelStore
from models import cost, data_dependence
from models.builtin import BUILTIN_ID
from models.validate import ModelRejected, check
from service.app import create_app
from tests.conftest import REDIS_URL, clean_prefix, encode, sample
from tests.onnx_builders import ClassicNet, conv_weights, export, seeded, stack_model

CAT = encode(sample("chelsea"))
KEYS = {"alice": "alice-secret-0123456789", "bob": "bob-secret-0123456789"}
# EfficientNet-Lite0 at 224×224: 407M multiply-adds (tensorflow/tpu, models/official/efficientnet/lite/README.md,
# the "MAdds" column).
LITE0_MADDS = 407e6


def const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def head(source: str) -> list[onnx.NodeProto]:
    """Conv → GlobalAveragePool → Flatten: class scores `scores` (4 classes) from a 1×3×H×W tensor `source`."""
    return [helper.make_node("Conv", [source, "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["scores"])]


def scores_declared(data: bytes, classes: int = 4) -> bytes:
    """The output declared 1×classes, as an exporter writes it (inference cannot tell it for these graphs)."""
    model = onnx.load_model_from_string(data)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classes]))
    return model.SerializeToString()


def reshape_from_values() -> bytes:
    """Reshape whose target shape is computed from the pixels: [1, 3, n, -1] with n = the rounded mean pixel."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
             helper.make_node("Abs", ["mean"], ["size"]), helper.make_node("Ceil", ["size"], ["up"]),
             helper.make_node("Cast", ["up"], ["n"], to=TensorProto.INT64),
             helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
             helper.make_node("Concat", ["lead", "n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["reshaped"], name="chosen_reshape"),
             *head("reshaped")]
    inits = [const("axis0", [0]), const("lead", [1, 3]), const("minus1", [-1]), conv_weights("w", 4, 3, 3)]
    return scores_declared(stack_model(nodes, inits))


def if_on_values() -> bytes:
    """An If that runs one of two branches depending on whether the image's pixels sum above 0."""
    def branch(name: str, scale: float) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Mul", ["x", f"{name}_k"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 3, 32, 32])],
                                 [const(f"{name}_k", scale, np.float32)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["bright"]),
             helper.make_node("If", ["bright"], ["picked"], name="branch_on_pixels",
                              then_branch=branch("then", 2.0), else_branch=branch("else", 0.5)),
             *head("picked")]
    return scores_declared(stack_model(nodes, [const("zero", 0.0, np.float32), conv_weights("w", 4, 3, 3)]))


def flatten_from_shape(opset: int = 13) -> bytes:
    """`x.view(x.size(0), -1)` as torch exports it: Shape → Gather → Unsqueeze → Concat → Reshape, then Gemm."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Shape", ["r"], ["shape"]),
             helper.make_node("Constant", [], ["zero"], value=const("zero", 0)),  # as torch writes it
             helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
             helper.make_node("Unsqueeze", ["batch", "axis0"], ["batch1"]),
             helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["r", "target"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["scores"], transB=1)]
    rng = np.random.default_rng(0)
    inits = [conv_weights("w", 4, 3, 3), const("axis0", [0]), const("minus1", [-1]),
             numpy_helper.from_array(rng.standard_normal((5, 4 * 32 * 32)).astype(np.float32) * 0.01, "fc"),
             const("fc_b", np.zeros(5), np.float32)]
    return stack_model(nodes, inits, opset=opset)


def expensive() -> bytes:
    """A 7×7 convolution to 512 channels on a 2048×2048 input: 315 G multiply-adds an image."""
    return stack_model([helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[7, 7], pads=[3] * 4),
                        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
                        helper.make_node("Flatten", ["g"], ["scores"])], [conv_weights("w", 512, 3, 7)], size=2048)


def slow(convs: int = 40, size: int = 128) -> bytes:
    """`convs` 3×3 convolutions of 64 channels at `size`² pixels (0.6 G multiply-adds each at 128²), He-scaled so
    the activations stay finite."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["h0"], kernel_shape=[3, 3], pads=[1] * 4)]
    inits = [conv_weights("w0", 64, 3, 3)]
    for i in range(1, convs + 1):
        weights = rng.standard_normal((64, 64, 3, 3)).astype(np.float32) * np.float32(np.sqrt(2 / (64 * 9)))
        inits.append(numpy_helper.from_array(weights, f"w{i}"))
        nodes += [helper.make_node("Conv", [f"h{i - 1}", f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"h{i}"])]
    nodes += [helper.make_node("GlobalAveragePool", [f"h{convs}"], ["g"]), helper.make_node("Flatten", ["g"], ["scores"])]
    return stack_model(nodes, inits, size=size)


def refusal(data: bytes) -> ModelRejected:
    model, image = check(data)
    with pytest.raises(ModelRejected) as caught:
        data_dependence.check(model, image.name)
    return caught.value


def test_reshape_fed_by_pixel_values_is_refused():
    error = refusal(reshape_from_values())
    assert error.code == "data_dependent_shape" and error.status == 422
    assert "chosen_reshape" in error.message and "target shape" in error.message and "input's values" in error.message
    assert error.details == {"node": "chosen_reshape", "op": "Reshape"}


def test_if_on_pixel_values_is_refused():
    error = refusal(if_on_values())
    assert error.code == "data_dependent_shape"
    assert "branch_on_pixels" in error.message and "condition" in error.message


def test_if_on_the_input_shape_is_accepted():
    """torch exports `squeeze` of a dynamic axis as an If on the axis' size: it follows from the shape alone."""
    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Identity", ["x"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 3, 32, 32])])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "zero"], ["batch"]),
             helper.make_node("Equal", ["batch", "one"], ["single"]),
             helper.make_node("If", ["single"], ["picked"], then_branch=branch("a"), else_branch=branch("b")),
             *head("picked")]
    model, image = check(scores_declared(stack_model(nodes, [const("zero", 0), const("one", 1),
                                                             conv_weights("w", 4, 3, 3)])))
    data_dependence.check(model, image.name)


@pytest.mark.parametrize("opset", [9, 13])
def test_shape_gather_concat_reshape_is_accepted_and_folded(opset):
    data = flatten_from_shape(opset) if opset >= 13 else export(seeded(ClassicNet()), 9)
    model, image = check(data)
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape"} <= {n.op_type for n in model.graph.node}
    size = (image.height, image.width)
    shapes = cost.shapes_at(model, image, size, data_dependence.check(model, image.name))
    found = cost.count(model, shapes)
    assert found.unknown == ()
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    assert shapes[reshape.output[0]][0][0] == 1 and len(shapes[reshape.output[0]][0]) == 2
    if opset >= 13:  # exact: the Conv's 4×(3·3·3) per pixel and the Gemm's 5×4096
        assert found.macs == 4 * 27 * 32 * 32 + 5 * 4 * 32 * 32
        assert found.activation_bytes == 4 * (2 * 4 * 32 * 32 + 4 * 32 * 32 + 5) + 8 * (4 + 1 + 1 + 2)  # no Constant


@pytest.fixture(scope="module")
def cost_settings(tmp_path_factory, builtin_store, builtin):
    """Two keys and a store holding the built-in model."""
    prefix = f"test-cost-{uuid.uuid4().hex[:8]}:"
    data_dir = tmp_path_factory.mktemp("data")
    store = ModelStore(data_dir)
    store.add(builtin_store.read_blob(builtin.onnx_sha256), lambda digest: builtin)
    yield Settings(redis_url=REDIS_URL, redis_prefix=prefix, data_dir=data_dir,
                   api_keys=",".join(f"{k}:{v}" for k, v in KEYS.items()), probe_memory_bytes=3 * 1024**3)
    clean_prefix(prefix)


@pytest.fixture(scope="module")
def keyed(cost_settings):
    with TestClient(create_app(cost_settings), raise_server_exceptions=False) as client:
        yield client


def as_(who: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def upload(client, data: bytes, who: str = "alice"):
    return client.post("/v1/models", files={"file": ("m.onnx", data, "application/octet-stream")}, headers=as_(who))


def predict(client, model: str, who: str):
    return client.post(f"/v1/models/{model}/predict", files={"image": ("cat.png", CAT, "image/png")},
                       data={"spec": json.dumps({"top_k": 3})}, headers=as_(who))


@pytest.mark.parametrize("make, words", [(reshape_from_values, "chosen_reshape"), (if_on_values, "branch_on_pixels")])
def test_upload_of_a_data_dependent_graph_is_422(keyed, make, words):
    response = upload(keyed, make())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "data_dependent_shape" and words in error["message"]


def test_expensive_graph_is_refused_before_it_runs(keyed):
    response = upload(keyed, expensive())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "model_too_expensive" and "GFLOPs" in error["message"] and "2048×2048" in error["message"]
    assert error["details"]["macs"] == 512 * 3 * 49 * 2048 * 2048


def test_cost_limits_are_settings(keyed, cost_settings):
    data = flatten_from_shape()
    with TestClient(create_app(cost_settings.model_copy(update={"max_model_activation_bytes": 10_000})),
                    raise_server_exceptions=False) as small:
        response = upload(small, data)
    assert response.status_code == 422 and response.json()["error"]["code"] == "model_too_expensive", response.text
    assert "MiB" in response.json()["error"]["message"]
    response = upload(keyed, data)
    assert response.status_code == 201, response.text
    assert response.json()["cost"]["macs"] == 4 * 27 * 32 * 32 + 5 * 4 * 32 * 32


def test_builtin_model_cost_is_recorded_and_plausible(keyed):
    info = keyed.get(f"/v1/models/{BUILTIN_ID}", headers=as_("bob")).json()
    recorded = info["cost"]
    assert 0.5 < recorded["macs"] / LITE0_MADDS < 2, recorded
    assert recorded["flops"] >= 2 * recorded["macs"]
    # activations at 224²: the stem alone is 32×112×112 floats (1.6 MB); all of them well under 1 GB
    assert 32 * 112 * 112 * 4 < recorded["activation_bytes"] < 2**30


def forward_seconds(data: bytes, size: int) -> float:
    """The quickest of three ONNX Runtime runs of the model on one image, on this machine (s)."""
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: np.zeros((1, 3, size, size), np.float32)}
    session.run(None, x)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        session.run(None, x)
        times.append(time.perf_counter() - start)
    return min(times)


def test_slow_forward_ends_in_forward_timeout_and_the_next_predict_answers(cost_settings, builtin_store, builtin):
    """The limit is set between the two models' times on this machine: a third of the slow model's."""
    data = slow()
    slow_s = forward_seconds(data, 128)
    fast_s = forward_seconds(builtin_store.read_blob(builtin.onnx_sha256), 224)
    limit = slow_s / 3
    if limit < 5 * fast_s:
        pytest.skip(f"this machine runs the slow model too fast ({slow_s:.3f} s, built-in {fast_s:.3f} s)")
    with TestClient(create_app(cost_settings.model_copy(update={"forward_time_limit_s": limit})),
                    raise_server_exceptions=False) as client:
        response = upload(client, data)
        assert response.status_code == 201, response.text
        model = response.json()["id"]
        timed_out = predict(client, model, "alice")
        assert timed_out.status_code == 503, timed_out.text
        error = timed_out.json()["error"]
        assert error["code"] == "forward_timeout" and int(timed_out.headers["Retry-After"]) > 0
        assert error["details"] == {"limit_s": limit}
        assert predict(client, BUILTIN_ID, "bob").status_code == 200
        assert predict(client, BUILTIN_ID, "alice").status_code == 200
        assert client.get("/healthz").status_code == 200


def test_a_request_shares_one_deadline_over_its_runs():
    """Each run alone fits the limit (3 × one run's time); five in one request do not, and end in
    `forward_timeout`; the session then runs as before."""
    import onnxruntime as ort

    from models.deadline import ForwardTimeout, Limited, request

    data = slow(convs=10, size=64)
    one = forward_seconds(data, 64)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    limited = Limited(session, 3 * one)
    x = {"x": np.zeros((1, 3, 64, 64), np.float32)}
    for _ in range(5):
        limited.run(None, x)
    with request(), pytest.raises(ForwardTimeout) as caught:
        for _ in range(5):
            limited.run(None, x)
    assert caught.value.status == 503 and caught.value.code == "forward_timeout" and caught.value.retry_after
    assert session.run(None, x)[0].shape == (1, 64)
