"""Hostile and unusual input: every bad request is a 4xx with the JSON error shape, and the
service stays healthy; unusual-but-valid images (16-bit, CMYK, RGBA, palette, animated GIF,
EXIF-rotated) are converted and answered."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode, sample

MODEL = "/v1/models/efficientnet-lite0"
CAT = sample("chelsea")


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height pixels (a decompression bomb)."""
    raw = bytearray(encode(np.zeros((1, 1, 3), np.uint8)))
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr: ihdr + 17])))
    return bytes(raw)


def file_request(data: bytes, spec: dict | None = None, view: str = "predict"):
    return ("post", f"{MODEL}/{view}", {"files": {"image": ("f", data, "application/octet-stream")},
                                        "data": {"spec": json.dumps(spec or {})}})


def json_request(body, view: str = "predict", raw: bytes | None = None, media: str = "application/json"):
    content = raw if raw is not None else json.dumps(body).encode()
    return ("post", f"{MODEL}/{view}", {"content": content, "headers": {"content-type": media}})


CAT_B64 = base64.b64encode(encode(CAT, "JPEG")).decode()
PNG = encode(CAT)
JPEG = encode(CAT, "JPEG")

BAD = {
    "zero bytes": (file_request(b""), 400),
    "not an image": (file_request(b"%PDF-1.4 definitely not a picture" * 10), 415),
    "truncated png": (file_request(PNG[: len(PNG) // 2]), 400),
    "truncated jpeg": (file_request(JPEG[: len(JPEG) // 3]), 400),
    "decompression bomb": (file_request(png_declaring(30000, 30000)), 413),
    "unknown layer": (file_request(PNG, {"layer": "no/such/layer"}, "activations"), 422),
    "channel out of range": (file_request(PNG, {"layer": "_relu0", "channels": [32]}, "activations"), 422),
    "negative channel": (file_request(PNG, {"layer": "_relu0", "channels": [-1]}, "activations"), 422),
    "patch larger than the image": (file_request(PNG, {"patch": 500}, "occlusion"), 422),
    "stride 0": (file_request(PNG, {"stride": 0}, "occlusion"), 422),
    "unknown fill": (file_request(PNG, {"fill": "purple"}, "occlusion"), 422),
    "unknown target label": (file_request(PNG, {"target": "unicorn"}, "occlusion"), 422),
    "target index out of range": (file_request(PNG, {"target": 1000}, "occlusion"), 422),
    "unknown colormap": (file_request(PNG, {"layer": "_relu0", "colormap": "rainbow-unicorn"}, "activations"), 422),
    "unknown model": (("post", "/v1/models/nope/predict", {"json": {"image": {"data": CAT_B64}}}), 404),
    "malformed json": (json_request(None, raw=b'{"image": {"data": '), 400),
    "deeply nested json": (json_request(None, raw=b"[" * 100000 + b"]" * 100000), 400),
    "100000-digit integer": (json_request(None, raw=b'{"top_k": ' + b"9" * 100000 + b"}"), 400),
    "wrong field types": (json_request({"image": {"data": CAT_B64}, "top_k": "five"}), 422),
    "top_k zero": (json_request({"image": {"data": CAT_B64}, "top_k": 0}), 422),
    "unknown field": (json_request({"image": {"data": CAT_B64}, "colour": 1}), 422),
    "no image": (json_request({"top_k": 3}), 422),
    "image twice": (("post", f"{MODEL}/predict", {"files": {"image": ("f", PNG, "image/png")},
                                                  "data": {"spec": json.dumps({"image": {"data": CAT_B64}})}}), 422),
    "bad base64": (json_request({"image": {"data": "!!!not base64!!!"}}), 422),
    "unknown image id": (json_request({"image": {"id": "0" * 32}}), 404),
    "image ref with both forms": (json_request({"image": {"id": "x", "data": CAT_B64}}), 422),
    "unsupported media type": (json_request(None, raw=b"top_k=3", media="text/plain"), 415),
    "spec not json": (("post", f"{MODEL}/predict", {"files": {"image": ("f", PNG, "image/png")},
                                                    "data": {"spec": "{not json"}}), 400),
    "unexpected file part": (("post", f"{MODEL}/predict", {"files": {"weights": ("f", PNG, "image/png")}}), 400),
    "upload without file part": (("post", "/v1/images", {"data": {"x": "1"}}), 400),
    "upload not multipart": (("post", "/v1/images", {"content": PNG, "headers": {"content-type": "image/png"}}), 400),
    "upload not an image": (("post", "/v1/images", {"files": {"file": ("f", b"hello", "text/plain")}}), 415),
    "unknown image": (("get", "/v1/images/doesnotexist", {}), 404),
    "unknown route": (("get", "/v2/nothing", {}), 404),
    "wrong method": (("delete", "/healthz", {}), 405),
    "filters of unknown layer": (("get", f"{MODEL}/layers/zzz/filters", {}), 422),
    "filters bad format": (("get", f"{MODEL}/layers/_bn0/filters?format=gif", {}), 422),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_json_4xx_and_the_service_stays_up(client, case):
    (method, url, kwargs), status = BAD[case]
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, (case, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] and error["message"]
    assert "Traceback" not in response.text
    assert client.get("/healthz").status_code == 200


def test_pixel_limit_is_a_setting(settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    small = settings.model_copy(update={"max_image_pixels": 100 * 100})
    with TestClient(create_app(small)) as tight:
        response = tight.post(f"{MODEL}/predict", files={"image": ("f", PNG, "image/png")})
    assert response.status_code == 413 and response.json()["error"]["code"] == "image_too_large"


def sixteen_bit_png() -> bytes:
    grey = (sample("camera").astype(np.uint16) * 257)
    out = io.BytesIO()
    Image.fromarray(grey).save(out, format="PNG")
    return out.getvalue()


def save(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.fromarray(CAT), Image.fromarray(255 - CAT)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


UNUSUAL = {
    "16-bit grey png": sixteen_bit_png(),
    "cmyk jpeg": save(Image.fromarray(CAT).convert("CMYK"), "JPEG"),
    "rgba png": encode(np.dstack([CAT, np.full(CAT.shape[:2], 128, np.uint8)])),
    "palette png": save(Image.fromarray(CAT).convert("P"), "PNG"),
    "animated gif": animated_gif(),
    "webp": encode(CAT, "WEBP"),
    "bmp": encode(CAT, "BMP"),
    "tiff": encode(CAT, "TIFF"),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_unusual_images_are_converted(client, case):
    response = client.post("/v1/images", files={"file": ("f", UNUSUAL[case], "application/octet-stream")})
    assert response.status_code == 201, response.text
    image_id = response.json()["id"]
    png = client.get(f"/v1/images/{image_id}")
    assert Image.open(io.BytesIO(png.content)).mode == "RGB"
    predicted = client.post(f"{MODEL}/predict", json={"image": {"id": image_id}, "top_k": 1})
    assert predicted.status_code == 200


def test_sixteen_bit_keeps_its_contrast(client):
    image_id = client.post("/v1/images", files={"file": ("f", sixteen_bit_png(), "image/png")}).json()["id"]
    pixels = np.asarray(Image.open(io.BytesIO(client.get(f"/v1/images/{image_id}").content)))
    expected = sample("camera")
    assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 1  # not clipped to white


def test_exif_orientation_is_honoured(client):
    tall = CAT[:, :300]  # 300 px wide, 451 high
    image = Image.fromarray(tall)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    info = client.post("/v1/images", files={"file": ("f", out.getvalue(), "image/jpeg")}).json()
    assert (info["width"], info["height"]) == (tall.shape[0], tall.shape[1])


def test_same_bytes_same_id(client):
    first = client.post("/v1/images", files={"file": ("a.png", PNG, "image/png")}).json()
    second = client.post("/v1/images", files={"file": ("b.png", PNG, "image/png")}).json()
    assert first["id"] == second["id"] and first["format"] == "png"
    assert (first["width"], first["height"]) == (CAT.shape[1], CAT.shape[0])
