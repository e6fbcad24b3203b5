"""Every way an upload is refused: crafted files, each a 4xx JSON error with an actionable message;
nothing is kept, and the API stays healthy (bombs included)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from core.settings import Settings
from service.app import create_app
from tests.conftest import REDIS_URL, clean_prefix, encode, sample
from tests.onnx_builders import ClassicNet, conv_weights, export, seeded, stack_model


@pytest.fixture(scope="module")
def refusal_settings(tmp_path_factory):
    prefix = f"test-refuse-{uuid.uuid4().hex[:8]}:"
    yield Settings(redis_url=REDIS_URL, redis_prefix=prefix, data_dir=tmp_path_factory.mktemp("data"),
                   probe_memory_bytes=3 * 1024 ** 3)
    clean_prefix(prefix)


@pytest.fixture(scope="module")
def client(refusal_settings):
    with TestClient(create_app(refusal_settings), raise_server_exceptions=False) as test_client:
        yield test_client


def small_net(channels: int = 3) -> onnx.ModelProto:
    """Conv → Relu → GlobalAveragePool → Flatten on a 1×C×32×32 input."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["scores"])]
    return onnx.load_model_from_string(stack_model(nodes, [conv_weights("w", 4, channels, 3)], channels=channels))


def external(location: str) -> bytes:
    model = small_net()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "432")):
        weight.external_data.add(key=key, value=value)
    return model.SerializeToString()


def custom_domain() -> bytes:
    model = small_net()
    model.graph.node.insert(2, helper.make_node("Backdoor", ["r"], ["r2"], domain="com.evil"))
    model.graph.node[3].input[0] = "r2"
    model.opset_import.append(helper.make_opsetid("com.evil", 1))
    return model.SerializeToString()


def unsupported_op() -> bytes:
    model = small_net()
    model.graph.node[1].op_type = "Hardmax"
    return model.SerializeToString()


def no_image_input() -> bytes:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "flat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def huge_input() -> bytes:
    model = small_net()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 100_000, 100_000
    return model.SerializeToString()


def old_opset() -> bytes:
    model = small_net()
    model.opset_import[0].version = 5
    return model.SerializeToString()


def constant_of_shape_bomb(computed: bool) -> bytes:
    """Adds the sum of zeros of shape 1×3×65536×65536 (48 GiB) to the input; with `computed` the shape is
    a product of constants, so only running the model finds out."""
    shape = np.array([1, 3, 65536, 65536], np.int64)
    if computed:
        nodes = [helper.make_node("Mul", ["half", "two"], ["shape"]),
                 helper.make_node("ConstantOfShape", ["shape"], ["zeros"])]
        inits = [numpy_helper.from_array(shape // np.array([1, 1, 2, 2]), "half"),
                 numpy_helper.from_array(np.array([1, 1, 2, 2], np.int64), "two")]
    else:
        nodes = [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(shape)),
                 helper.make_node("ConstantOfShape", ["shape"], ["zeros"])]
        inits = []
    nodes += [helper.make_node("ReduceSum", ["zeros"], ["total"], keepdims=0),
              helper.make_node("Add", ["x", "total"], ["x2"]),
              helper.make_node("Conv", ["x2", "w"], ["c"], kernel_shape=[3, 3]),
              helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["scores"])]
    return stack_model(nodes, inits + [conv_weights("w", 4, 3, 3)])


def loop_and_range(op: str) -> bytes:
    """A `Loop` of 2^40 iterations or a `Range` of 2^40 elements feeding the network."""
    big = numpy_helper.from_array(np.array(2 ** 40, np.int64), "big")
    if op == "Range":
        extra = [helper.make_node("Range", ["zero", "big", "one"], ["r"])]
    else:
        body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                                 [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                  helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
                                 [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])])
        extra = [helper.make_node("Loop", ["big", ""], [], body=body)]
    model = small_net()
    model.graph.node.extend(extra)
    model.graph.initializer.extend([big, numpy_helper.from_array(np.array(0, np.int64), "zero"),
                                    numpy_helper.from_array(np.array(1, np.int64), "one")])
    return model.SerializeToString()


CASES = {
    "relative external data": (external("../../etc/passwd"), "external_data", "../../etc/passwd"),
    "absolute external data": (external("/etc/passwd"), "external_data", "save_as_external_data=False"),
    "not onnx": (encode(sample("chelsea")), "not_onnx", "not an ONNX model"),
    "text file": (b"this is not a model\n" * 10, "not_onnx", "not an ONNX model"),
    "custom domain op": (custom_domain(), "custom_ops", "com.evil.Backdoor"),
    "op outside the allow-list": (unsupported_op(), "unsupported_ops", "Hardmax"),
    "huge Range": (loop_and_range("Range"), "unsupported_ops", "Range"),
    "giant Loop": (loop_and_range("Loop"), "unsupported_ops", "Loop"),
    "no image input": (no_image_input(), "no_image_input", "N×C×H×W"),
    "huge declared input": (huge_input(), "input_too_large", "100000×100000"),
    "opset too old": (old_opset(), "unsupported_opset", "opset 5"),
    "constant-of-shape bomb": (constant_of_shape_bomb(False), "tensor_too_large", "ConstantOfShape"),
    "computed constant-of-shape bomb": (constant_of_shape_bomb(True), "model_too_expensive", "49152 MiB"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_file_is_refused(client, refusal_settings, case):
    data, code, words = CASES[case]
    response = client.post("/v1/models", files={"file": ("model.onnx", data)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models").json()["models"] == []
    assert not list((refusal_settings.data_dir / "models").glob("blobs/*"))


def test_bad_form_and_preprocess_values(client):
    data = small_net().SerializeToString()
    cases = [
        ({"files": {"model": ("m.onnx", data)}}, 400, "malformed_multipart"),
        ({"files": {"file": ("m.onnx", b"")}}, 422, "not_onnx"),
        ({"files": {"name": (None, "x")}}, 422, "model_file_required"),
        ({"files": {"file": ("m.onnx", data)}, "data": {"preprocess": "{nope"}}, 400, "malformed_json"),
        ({"files": {"file": ("m.onnx", data)}, "data": {"preprocess": json.dumps({"colour": "RGB"})}}, 422,
         "validation_error"),
        ({"files": {"file": ("m.onnx", data)}, "data": {"preprocess": json.dumps({"color": "L"})}}, 422,
         "preprocess_mismatch"),
        ({"files": {"file": ("m.onnx", data), "labels": ("l.txt", b"cat\ndog\n")}}, 422, "labels_mismatch"),
        ({"files": {"file": ("m.onnx", data), "labels": ("l.txt", b"\xff\xfe\x00")}}, 422, "bad_labels"),
        ({"files": {"file": ("m.onnx", data)}, "data": {"preprocess": json.dumps({"input_size": 64})}}, 422,
         "input_size_mismatch"),
    ]
    for kwargs, status, code in cases:
        response = client.post("/v1/models", **kwargs)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (kwargs, response.text)
    response = client.post("/v1/models", json={"file": "x"})
    assert response.status_code == 415


def test_byte_limit_and_time_limit(refusal_settings):
    data = export(seeded(ClassicNet()), 9)
    for update, status, code in (({"max_model_bytes": 1000}, 413, "model_too_large"),
                                 ({"probe_time_limit_s": 0.2}, 422, "analysis_timeout")):
        with TestClient(create_app(refusal_settings.model_copy(update=update)), raise_server_exceptions=False) as c:
            response = c.post("/v1/models", files={"file": ("m.onnx", data)})
            assert response.status_code == status and response.json()["error"]["code"] == code, response.text
            assert c.get("/healthz").status_code == 200


def test_byte_limit_holds_without_a_content_length(refusal_settings):
    """A chunked body declares no size: it is counted as it streams in and cut off at the limit."""
    head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.onnx\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n")

    def body():
        yield head
        for _ in range(64):
            yield b"\0" * 65536  # 4 MiB in all, never finished

    with TestClient(create_app(refusal_settings.model_copy(update={"max_model_bytes": 1024 * 1024})),
                    raise_server_exceptions=False) as c:
        response = c.post("/v1/models", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413 and response.json()["error"]["code"] == "model_too_large"
        assert c.get("/healthz").status_code == 200


def test_grey_model_gets_grey_preprocessing(client):
    response = client.post("/v1/models", files={"file": ("grey.onnx", small_net(channels=1).SerializeToString())})
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["input"]["channels"] == 1 and info["preprocess"]["color"] == "L"
    assert client.post(f"/v1/models/{info['id']}/predict", files={"image": ("c.png", encode(sample("chelsea")))},
                       data={"spec": "{}"}).status_code == 200
    assert client.delete(f"/v1/models/{info['id']}").status_code == 204


def test_a_second_upload_while_one_is_analysed_is_429(client):
    client.post("/v1/models", files={"file": ("m.onnx", b"not onnx")})  # the first upload creates the slots
    slots = client.app.state.upload_slots
    assert slots.acquire(blocking=False)
    try:
        response = client.post("/v1/models", files={"file": ("m.onnx", small_net().SerializeToString())})
        assert response.status_code == 429 and response.headers["retry-after"]
        assert response.json()["error"]["code"] == "uploads_busy"
    finally:
        slots.release()
