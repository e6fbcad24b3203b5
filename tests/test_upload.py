"""Upload → use (predict, activations, filters, occlusion) → restart → delete, through the real
app with real Redis and the real sandboxed analysis; the API keeps answering during an upload."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from core.stores.models import ModelStore
from service.app import create_app
from tests.conftest import REDIS_URL, clean_prefix, encode, sample
from tests.onnx_builders import ClassicNet, ResidualNet, export, seeded, sum_branches_model

CAT = encode(sample("chelsea"))
LABELS = "\n".join(f"class {i}" for i in range(10)) + "\n"


@pytest.fixture(scope="module")
def upload_settings(tmp_path_factory):
    prefix = f"test-upload-{uuid.uuid4().hex[:8]}:"
    yield Settings(redis_url=REDIS_URL, redis_prefix=prefix, data_dir=tmp_path_factory.mktemp("data"))
    clean_prefix(prefix)


@pytest.fixture(scope="module")
def app_client(upload_settings):
    with TestClient(create_app(upload_settings), raise_server_exceptions=False) as client:
        yield client


def upload(client, data: bytes, name: str = "net", labels: str | None = None, preprocess: dict | None = None):
    files = {"file": (f"{name}.onnx", data, "application/octet-stream")}
    if labels is not None:
        files["labels"] = ("labels.txt", labels.encode(), "text/plain")
    form = {"preprocess": json.dumps(preprocess)} if preprocess is not None else {}
    return client.post("/v1/models", files=files, data=form)


def view(client, model: str, name: str, spec: dict):
    return client.post(f"/v1/models/{model}/{name}", files={"image": ("cat.png", CAT, "image/png")},
                       data={"spec": json.dumps(spec)})


@pytest.fixture(scope="module")
def classic(app_client):
    response = upload(app_client, export(seeded(ClassicNet()), 9), "Classic net", LABELS,
                      {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color": "BGR"})
    assert response.status_code == 201, response.text
    return response.json()


def test_upload_returns_the_model_info(app_client, classic):
    assert classic["source"] == "upload" and classic["name"] == "Classic net"
    assert classic["id"].startswith("classic-net-")
    assert classic["input"] == {"channels": 3, "height": 64, "width": 64, "dynamic_size": False}
    assert classic["num_classes"] == 10 and classic["labels"][3] == "class 3"
    assert classic["preprocess"]["color"] == "BGR"
    ops = [layer["op"] for layer in classic["layers"]]
    assert ops[:4] == ["Conv", "Relu", "LRN", "MaxPool"]
    assert classic["layers"][0]["receptive_field"] == {"size": 5, "stride": 2, "start": -2}
    listed = app_client.get("/v1/models").json()["models"]
    assert classic["id"] in [m["id"] for m in listed]
    assert app_client.get(f"/v1/models/{classic['id']}").json() == classic


def reference_probabilities(settings: Settings, model: str) -> np.ndarray:
    """Softmax of the uploaded file's logits for the cat photo, by ONNX Runtime and numpy, the photo
    prepared as the upload asked: resized straight to 64×64 (bicubic), BGR, `(pixel / 255 − mean) / std`
    with mean and std in the model's channel order."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(CAT)).convert("RGB").resize((64, 64), Image.BICUBIC), np.float32)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    x = ((pixels[..., ::-1] / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    return onnx_probabilities(settings, model, x)


def onnx_probabilities(settings: Settings, model: str, x: np.ndarray) -> np.ndarray:
    """Softmax of the stored file's logits for the model input `x` (1×C×H×W), by ONNX Runtime and numpy."""
    import onnx
    import onnxruntime as ort

    store = ModelStore(settings.data_dir)
    record = store.get(model)
    graph = onnx.load(str(store.blob_path(record.onnx_sha256)))
    if record.logits_name not in [o.name for o in graph.graph.output]:  # logits taken before a softmax
        graph.graph.output.append(onnx.helper.make_tensor_value_info(record.logits_name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run([record.logits_name], {record.input_name: x})[0][0].astype(np.float64)
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def test_uploaded_model_serves_every_forward_view(app_client, upload_settings, classic):
    model, conv = classic["id"], classic["layers"][0]["name"]
    expected = reference_probabilities(upload_settings, model)
    predictions = view(app_client, model, "predict", {"top_k": 3}).json()["predictions"]
    order = np.argsort(-expected)[:3]
    assert [p["index"] for p in predictions] == order.tolist()
    assert [p["label"] for p in predictions] == [f"class {i}" for i in order]  # from the uploaded labels file
    np.testing.assert_allclose([p["probability"] for p in predictions], expected[order], rtol=1e-5, atol=1e-7)
    stats = view(app_client, model, "activations", {"layer": conv, "format": "json"}).json()
    assert stats["shape"] == [16, 32, 32]
    png = view(app_client, model, "activations", {"layer": classic["layers"][2]["name"]})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    weights = app_client.get(f"/v1/models/{model}/layers/{conv}/filters", params={"format": "npy"})
    assert weights.status_code == 200 and np.load(io.BytesIO(weights.content)).shape == (16, 3, 5, 5)
    assert app_client.get(f"/v1/models/{model}/layers/{conv}/filters").content[:4] == b"\x89PNG"
    occlusion = view(app_client, model, "occlusion", {"patch": 16, "stride": 16, "format": "json"}).json()
    assert np.asarray(occlusion["map"]).shape == (4, 4)
    assert occlusion["target"] == int(order[0])  # no target given: the top-1 class
    assert occlusion["baseline_probability"] == pytest.approx(expected[order[0]], rel=1e-5, abs=1e-7)


def test_model_exported_at_batch_one_serves_occlusion_batches(app_client):
    """A zoo-style file with batch fixed at 1: ONNX Runtime is fed one image at a time."""
    import onnxruntime as ort
    from PIL import Image

    data = sum_branches_model(9)
    response = upload(app_client, data, "sum")
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["preprocess"]["mean"] == [0.0] * 3 and info["preprocess"]["std"] == [1.0] * 3
    # class 2: the top class is saturated (p > 0.99999) on this photo; class 2 (p ≈ 1e-5) moves with the patches
    occlusion = view(app_client, info["id"], "occlusion", {"patch": 4, "stride": 4, "target": 2, "format": "json"})
    assert occlusion.status_code == 200
    body = occlusion.json()
    # Reference: each covered copy on its own through ONNX Runtime; the cover is the image's mean colour.
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open(io.BytesIO(CAT)).convert("RGB").resize((16, 16), Image.BICUBIC), np.float32)
    x = (pixels / 255).transpose(2, 0, 1)[None].astype(np.float32)

    def probabilities(t: np.ndarray) -> np.ndarray:
        return session.run(["prob"], {"data": t})[0][0]

    target = 2
    assert body["target"] == target
    assert body["baseline_probability"] == pytest.approx(float(probabilities(x)[target]), rel=1e-4)
    reference = np.empty((4, 4))
    for r in range(4):
        for c in range(4):
            covered = x.copy()
            covered[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = x.mean(axis=(2, 3), keepdims=True)
            reference[r, c] = probabilities(covered)[target]
    np.testing.assert_allclose(np.asarray(body["map"]), reference, rtol=1e-4, atol=0)
    assert np.ptp(reference) > 0.5 * reference.mean()  # the patches matter: one repeated value would not pass


def test_dynamic_model_is_probed_at_two_sizes_and_used_at_the_asked_size(app_client):
    response = upload(app_client, export(seeded(ResidualNet()), 17, dynamic=True), "resnet",
                      preprocess={"input_size": [96, 128], "resize": 140})
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["input"] == {"channels": 3, "height": 96, "width": 128, "dynamic_size": True}
    assert info["preprocess"]["resize"] == 140 and info["preprocess"]["mean"] == [0.0, 0.0, 0.0]
    assert view(app_client, info["id"], "predict", {}).status_code == 200


def test_crop_written_as_torchvision_writes_it_is_accepted_and_fed_exactly(app_client, upload_settings):
    """`{"resize": 256, "crop": 224}` on a model of dynamic size: used at 224×224, the crop kept as [224, 224], and
    predictions equal ONNX Runtime on the photo prepared by hand as torchvision's Resize(256) + CenterCrop(224)
    place it: 451×300 → 384×256 (int(256·451/300) = 384, not 385), crop at left round(160/2) = 80, top 16."""
    from PIL import Image

    response = upload(app_client, export(seeded(ResidualNet()), 17, dynamic=True), "cropped",
                      preprocess={"resize": 256, "crop": 224})
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["input"] == {"channels": 3, "height": 224, "width": 224, "dynamic_size": True}
    assert info["preprocess"]["crop"] == [224, 224] and info["preprocess"]["resize"] == 256
    assert app_client.get(f"/v1/models/{info['id']}").json()["preprocess"] == info["preprocess"]
    photo = Image.open(io.BytesIO(CAT)).convert("RGB")
    assert photo.size == (451, 300)
    pixels = np.asarray(photo.resize((384, 256), Image.BICUBIC).crop((80, 16, 80 + 224, 16 + 224)), np.float32)
    expected = onnx_probabilities(upload_settings, info["id"], (pixels / 255).transpose(2, 0, 1)[None].astype(np.float32))
    predictions = view(app_client, info["id"], "predict", {"top_k": 3}).json()["predictions"]
    order = np.argsort(-expected)[:3]
    assert [p["index"] for p in predictions] == order.tolist()
    np.testing.assert_allclose([p["probability"] for p in predictions], expected[order], rtol=1e-5, atol=1e-7)


def test_crop_size_sets_a_dynamic_input_size_and_must_match_a_fixed_one(app_client):
    dynamic = export(seeded(ResidualNet()), 17, dynamic=True)
    response = upload(app_client, dynamic, "wide", preprocess={"resize": 140, "crop": [96, 128]})
    assert response.status_code == 201, response.text
    assert response.json()["input"] == {"channels": 3, "height": 96, "width": 128, "dynamic_size": True}
    assert response.json()["preprocess"]["crop"] == [96, 128]
    fixed = upload(app_client, export(seeded(ClassicNet()), 9), "classic", preprocess={"resize": 256, "crop": 224})
    assert fixed.status_code == 422, fixed.text
    error = fixed.json()["error"]
    assert error["code"] == "crop_mismatch" and "224×224" in error["message"] and "64×64" in error["message"]
    both = upload(app_client, dynamic, "both", preprocess={"input_size": [96, 128], "crop": 112})
    assert both.status_code == 422 and both.json()["error"]["code"] == "crop_mismatch", both.text
    assert "112×112" in both.json()["error"]["message"] and "96×128" in both.json()["error"]["message"]
    bad = upload(app_client, dynamic, "bad", preprocess={"crop": 0})
    assert bad.status_code == 422 and "crop" in bad.text


def test_model_survives_a_restart_and_is_deleted(upload_settings, app_client, classic):
    model = classic["id"]
    store = ModelStore(upload_settings.data_dir)
    blob = store.blob_path(store.get(model).onnx_sha256)
    assert blob.exists() and not list(store.root.glob("**/.tmp-*"))
    with TestClient(create_app(upload_settings), raise_server_exceptions=False) as restarted:
        assert restarted.get(f"/v1/models/{model}").json() == classic
        assert view(restarted, model, "predict", {}).status_code == 200
        assert restarted.delete(f"/v1/models/{model}").status_code == 204
        assert restarted.get(f"/v1/models/{model}").status_code == 404
    assert app_client.get(f"/v1/models/{model}").status_code == 404
    assert view(app_client, model, "predict", {}).status_code == 404
    assert not blob.exists()
    assert app_client.delete(f"/v1/models/{model}").status_code == 404


def test_builtin_model_cannot_be_deleted(upload_settings, builtin_store, builtin):
    settings = upload_settings.model_copy(update={"data_dir": upload_settings.data_dir / "with-builtin"})
    shutil.copytree(builtin_store.root, settings.data_dir / "models")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.delete(f"/v1/models/{builtin.id}")
        assert response.status_code == 403 and response.json()["error"]["code"] == "builtin_model"
        assert client.get(f"/v1/models/{builtin.id}").status_code == 200


def test_api_answers_while_a_model_is_analysed(app_client, builtin_store, builtin):
    data = builtin_store.blob_path(builtin.onnx_sha256).read_bytes()
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(response=upload(app_client, data, "lite0")))
    worker.start()
    latencies = []
    while worker.is_alive() and len(latencies) < 500:
        start = time.perf_counter()
        assert app_client.get("/healthz").status_code == 200
        latencies.append(time.perf_counter() - start)
        time.sleep(0.02)
    worker.join()
    assert done["response"].status_code == 201, done["response"].text
    assert len(latencies) >= 10 and max(latencies) < 1.0, (len(latencies), max(latencies))
    info = done["response"].json()
    assert [layer["name"] for layer in info["layers"]] == [layer.name for layer in builtin.layers]
    assert info["input"]["dynamic_size"] is True


def test_uploaded_models_belong_to_their_key_and_have_a_quota(upload_settings):
    keyed = upload_settings.model_copy(update={"api_keys": "alice:a-key,bob:b-key", "max_models_per_key": 1})
    alice, bob = {"Authorization": "Bearer a-key"}, {"Authorization": "Bearer b-key"}
    data = export(seeded(ClassicNet()), 9)
    with TestClient(create_app(keyed), raise_server_exceptions=False) as client:
        assert client.post("/v1/models", files={"file": ("n.onnx", data)}).status_code == 401
        first = client.post("/v1/models", files={"file": ("n.onnx", data)}, headers=alice)
        assert first.status_code == 201, first.text
        model = first.json()["id"]
        second = client.post("/v1/models", files={"file": ("n.onnx", data)}, headers=alice)
        assert second.status_code == 429 and second.json()["error"]["code"] == "model_quota"
        assert client.get(f"/v1/models/{model}", headers=bob).status_code == 404
        assert model not in [m["id"] for m in client.get("/v1/models", headers=bob).json()["models"]]
        assert client.post(f"/v1/models/{model}/predict", files={"image": ("c.png", CAT)}, headers=bob).status_code == 404
        assert client.delete(f"/v1/models/{model}", headers=bob).status_code == 404
        assert client.post(f"/v1/models/{model}/predict", files={"image": ("c.png", CAT)}, headers=alice).status_code == 200
        assert client.delete(f"/v1/models/{model}", headers=alice).status_code == 204


def test_a_model_uploaded_while_open_is_deleted_only_by_an_operator(upload_settings):
    """Open mode has one tenant, no key: its uploads belong to no key. Once keys are on every key sees such a model
    (like the built-in one), but only a tenant named in CONVSCOPE_OPERATOR_TENANTS may delete it."""
    with TestClient(create_app(upload_settings), raise_server_exceptions=False) as client:
        answer = upload(client, export(seeded(ClassicNet(), seed=7), 9), "left open")
        assert answer.status_code == 201, answer.text
        model = answer.json()["id"]
    keyed = upload_settings.model_copy(update={"api_keys": "alice:a-key,ops:o-key", "operator_tenants": "ops"})
    alice, ops = {"Authorization": "Bearer a-key"}, {"Authorization": "Bearer o-key"}
    with TestClient(create_app(keyed), raise_server_exceptions=False) as client:
        assert client.get(f"/v1/models/{model}", headers=alice).status_code == 200
        refused = client.delete(f"/v1/models/{model}", headers=alice)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_owner"
        assert client.get(f"/v1/models/{model}", headers=alice).status_code == 200  # unchanged
        assert client.delete(f"/v1/models/{model}", headers=ops).status_code == 204
        assert client.get(f"/v1/models/{model}", headers=alice).status_code == 404
