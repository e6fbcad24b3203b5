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
    "zero bytes": (file_request(b""), 400, "empty_image"),
    "not an image": (file_request(b"%PDF-1.4 definitely not a picture" * 10), 415, "unsupported_image"),
    "truncated png": (file_request(PNG[: len(PNG) // 2]), 400, "corrupt_image"),
    "truncated jpeg": (file_request(JPEG[: len(JPEG) // 3]), 400, "corrupt_image"),
    "decompression bomb": (file_request(png_declaring(30000, 30000)), 413, "image_too_large"),
    "unknown layer": (file_request(PNG, {"layer": "no/such/layer"}, "activations"), 422, "unknown_layer"),
    "channel out of range": (file_request(PNG, {"layer": "_relu0", "channels": [32]}, "activations"), 422,
                             "channel_out_of_range"),
    "negative channel": (file_request(PNG, {"layer": "_relu0", "channels": [-1]}, "activations"), 422,
                         "channel_out_of_range"),
    "patch larger than the image": (file_request(PNG, {"patch": 500}, "occlusion"), 422, "patch_too_large"),
    "stride 0": (file_request(PNG, {"stride": 0}, "occlusion"), 422, "validation_error"),
    "unknown fill": (file_request(PNG, {"fill": "purple"}, "occlusion"), 422, "validation_error"),
    "unknown target label": (file_request(PNG, {"target": "unicorn"}, "occlusion"), 422, "unknown_target"),
    "target index out of range": (file_request(PNG, {"target": 1000}, "occlusion"), 422, "unknown_target"),
    "unknown colormap": (file_request(PNG, {"layer": "_relu0", "colormap": "rainbow-unicorn"}, "activations"), 422,
                         "unknown_colormap"),
    "unknown model": (("post", "/v1/models/nope/predict", {"json": {"image": {"data": CAT_B64}}}), 404, "model_not_found"),
    "malformed json": (json_request(None, raw=b'{"image": {"data": '), 400, "malformed_json"),
    "deeply nested json": (json_request(None, raw=b"[" * 100000 + b"]" * 100000), 400, "malformed_json"),
    "100000-digit integer": (json_request(None, raw=b'{"top_k": ' + b"9" * 100000 + b"}"), 400, "malformed_json"),
    "wrong field types": (json_request({"image": {"data": CAT_B64}, "top_k": "five"}), 422, "validation_error"),
    "top_k zero": (json_request({"image": {"data": CAT_B64}, "top_k": 0}), 422, "validation_error"),
    "unknown field": (json_request({"image": {"data": CAT_B64}, "colour": 1}), 422, "validation_error"),
    "no image": (json_request({"top_k": 3}), 422, "image_required"),
    "image twice": (("post", f"{MODEL}/predict", {"files": {"image": ("f", PNG, "image/png")},
                                                  "data": {"spec": json.dumps({"image": {"data": CAT_B64}})}}), 422,
                    "image_required"),
    "bad base64": (json_request({"image": {"data": "!!!not base64!!!"}}), 422, "bad_base64"),
    "unknown image id": (json_request({"image": {"id": "0" * 32}}), 404, "image_not_found"),
    "image ref with both forms": (json_request({"image": {"id": "x", "data": CAT_B64}}), 422, "validation_error"),
    "unsupported media type": (json_request(None, raw=b"top_k=3", media="text/plain"), 415, "unsupported_media_type"),
    "spec not json": (("post", f"{MODEL}/predict", {"files": {"image": ("f", PNG, "image/png")},
                                                    "data": {"spec": "{not json"}}), 400, "malformed_json"),
    "unexpected file part": (("post", f"{MODEL}/predict", {"files": {"weights": ("f", PNG, "image/png")}}), 400,
                             "malformed_multipart"),
    "upload without file part": (("post", "/v1/images", {"data": {"x": "1"}}), 400, "malformed_multipart"),
    "upload not multipart": (("post", "/v1/images", {"content": PNG, "headers": {"content-type": "image/png"}}), 400,
                             "malformed_multipart"),
    "upload not an image": (("post", "/v1/images", {"files": {"file": ("f", b"hello", "text/plain")}}), 415,
                            "unsupported_image"),
    "unknown image": (("get", "/v1/images/doesnotexist", {}), 404, "image_not_found"),
    "unknown route": (("get", "/v2/nothing", {}), 404, "not_found"),
    "wrong method": (("delete", "/healthz", {}), 405, "method_not_allowed"),
    "filters of unknown layer": (("get", f"{MODEL}/layers/zzz/filters", {}), 422, "unknown_layer"),
    "filters bad format": (("get", f"{MODEL}/layers/_bn0/filters?format=gif", {}), 422, "validation_error"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_json_4xx_and_the_service_stays_up(client, case):
    (method, url, kwargs), status, code = BAD[case]
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, (case, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == code and error["message"], error
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


def first_frame_rgb(data: bytes) -> np.ndarray:
    """What a palette file (PNG, GIF) shows in its first frame, as Pillow reads it."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# case → (the RGB pixels the stored image should hold, the largest mean |difference| allowed, 0–255)
CONVERTED = {
    "16-bit grey png": (np.dstack([sample("camera")] * 3), 0.5),  # 16 → 8 bits: v // 257, as grey RGB
    "cmyk jpeg": (CAT, 4.0),  # lossy
    "rgba png": (CAT * (128 / 255) + 255 * (127 / 255), 0.5),  # alpha 128 composited on white
    "palette png": (first_frame_rgb(UNUSUAL["palette png"]), 0.0),
    "animated gif": (first_frame_rgb(UNUSUAL["animated gif"]), 0.0),  # the first frame, not the inverted second
    "webp": (CAT, 4.0),  # lossy
    "bmp": (CAT, 0.0),
    "tiff": (CAT, 0.0),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_unusual_images_are_converted(client, case):
    response = client.post("/v1/images", files={"file": ("f", UNUSUAL[case], "application/octet-stream")})
    assert response.status_code == 201, response.text
    image_id = response.json()["id"]
    png = client.get(f"/v1/images/{image_id}")
    stored = Image.open(io.BytesIO(png.content))
    assert stored.mode == "RGB"
    expected, tolerance = CONVERTED[case]
    pixels = np.asarray(stored, float)
    assert pixels.shape == expected.shape and np.abs(pixels - expected).mean() <= tolerance, case
    assert np.abs(pixels - expected).max() <= (1 if tolerance < 1 else 64), case
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
