"""The built-in EfficientNet-Lite0: known answers, and ONNX == torch at every size it claims."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from core import preprocessing
from tests.conftest import encode, sample

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def predict(client, photo: str, top_k: int = 5) -> list[dict]:
    response = client.post("/v1/models/efficientnet-lite0/predict",
                           files={"image": ("x.png", encode(sample(photo)), "image/png")},
                           data={"spec": f'{{"top_k": {top_k}}}'})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_chelsea_is_a_cat_in_top_2(client):
    top = predict(client, "chelsea")
    assert {p["index"] for p in top[:2]} & CAT_CLASSES, top


def test_coffee_is_espresso(client):
    top = predict(client, "coffee")
    assert top[0]["index"] == ESPRESSO and top[0]["label"] == "espresso"


def test_predictions_are_the_top_softmax_probabilities(client, builtin, builtin_store):
    """The 10 largest softmax probabilities (and their logits), largest first, as ONNX Runtime and
    numpy compute them on the same model input."""
    top = predict(client, "astronaut", top_k=10)
    session = ort.InferenceSession(str(builtin_store.blob_path(builtin.onnx_sha256)), providers=["CPUExecutionProvider"])
    x = preprocessing.to_tensor(preprocessing.fit(Image.fromarray(sample("astronaut")), builtin), builtin)
    logits = session.run([builtin.logits_name], {builtin.input_name: x})[0][0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probabilities)[:10]
    assert [p["index"] for p in top] == order.tolist()
    assert [p["label"] for p in top] == [builtin.labels[i] for i in order]
    np.testing.assert_allclose([p["probability"] for p in top], probabilities[order], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([p["logit"] for p in top], logits[order], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(224, 224), (225, 225), (193, 251), (256, 320), (97, 64)])
def test_onnx_matches_torch_at_every_size(builtin, builtin_store, torch_lite0, size):
    """The export claims dynamic H and W; TF SAME padding must not be frozen at 224."""
    assert builtin.input.dynamic_size
    session = ort.InferenceSession(str(builtin_store.blob_path(builtin.onnx_sha256)), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    with torch.no_grad():
        expected = torch_lite0(torch.from_numpy(x)).numpy()
    got = session.run([builtin.logits_name], {builtin.input_name: x})[0]
    assert np.abs(expected - got).max() <= 1e-3


def test_layer_list_has_receptive_fields(builtin):
    names = {layer.name: layer for layer in builtin.layers}
    stem = names["_relu0"]
    assert stem.shape == [32, 112, 112]
    assert (stem.receptive_field.size, stem.receptive_field.stride, stem.receptive_field.start) == (3, 2, 0)
    # block 1: depthwise 3×3 stride 2 on 112 px (even): TF pads 0 before, 1 after.
    dw = names["_blocks.1._relu1"].receptive_field
    assert (dw.size, dw.stride, dw.start) == (3 + 2 * 2 + 2 * 2, 4, -2)
    head = names["_relu1"]
    assert head.shape == [1280, 7, 7] and head.receptive_field.stride == 32
    assert builtin.layers[-1].name == "_relu1"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_export_hides_only_the_exporters_known_harmless_messages(caplog):
    from models.builtin import CHATTY_LOGGERS, quiet_exporter

    caplog.set_level(logging.INFO)
    levels = [logging.getLogger(name).level for name in CHATTY_LOGGERS]
    torch_onnx, collect = logging.getLogger("torch.onnx"), _Collect()  # torch.onnx has its own handler
    torch_onnx.addHandler(collect)
    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            with quiet_exporter():
                registry = logging.getLogger("torch.onnx._internal.exporter._registration")
                registry.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
                registry.warning("'%s' does not have a 'default' overload.", "foo::bar")
                logging.getLogger("onnxscript.optimizer").info("Removed 536 unused nodes")
                logging.getLogger("onnxscript.optimizer").warning("constant folding failed")
                warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use TreeSpec", FutureWarning, stacklevel=1)
                warnings.warn("an input is not used", UserWarning, stacklevel=1)
    finally:
        torch_onnx.removeHandler(collect)
    assert collect.messages == ["'foo::bar' does not have a 'default' overload."]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("onnxscript")] == ["constant folding failed"]
    assert [str(w.message) for w in shown] == ["an input is not used"]
    assert [logging.getLogger(name).level for name in CHATTY_LOGGERS] == levels  # restored
