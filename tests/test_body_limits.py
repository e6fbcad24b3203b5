"""Every route reads its body through one size-limited helper: a body over the route's limit is
refused with 413 as the stream passes the limit, before the rest of it is read."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.bodies import FORM_SLACK

CHUNK = 64 * 1024
CHUNKS = 64  # 4 MiB in all
IMAGE_LIMIT = 64 * 1024
BODY_LIMIT = 256 * 1024
FILE_HEAD = (b"--b\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"f.png\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n")
MULTIPART = "multipart/form-data; boundary=b"


@pytest.fixture(scope="module")
def tight(settings):
    small = settings.model_copy(update={"max_image_bytes": IMAGE_LIMIT, "max_body_bytes": BODY_LIMIT,
                                        "max_dataset_upload_bytes": BODY_LIMIT})
    with TestClient(create_app(small), raise_server_exceptions=False) as client:
        yield client


async def post_chunked(app, url: str, head: bytes, media: str) -> tuple[int, dict, int]:
    """POST a chunked body (no Content-Length) of `head` and zeros straight to the ASGI app;
    returns (status, JSON answer, bytes the app had read when it started answering)."""
    chunks = [head] + [b"\0" * CHUNK] * CHUNKS
    read = answered_after = 0
    answer: list[bytes] = []
    status = 0

    async def receive():
        nonlocal read
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        nonlocal status, answered_after
        if message["type"] == "http.response.start":
            status, answered_after = message["status"], read
        elif message["type"] == "http.response.body":
            answer.append(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": url, "raw_path": url.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"testserver"), (b"content-type", media.encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    await app(scope, receive, send)
    return status, json.loads(b"".join(answer)), answered_after


CASES = {
    "image upload": ("/v1/images", FILE_HEAD % b"file", MULTIPART, IMAGE_LIMIT + FORM_SLACK),
    "dataset upload": ("/v1/datasets", FILE_HEAD % b"file", MULTIPART, BODY_LIMIT),
    "view, multipart": ("/v1/models/efficientnet-lite0/predict", FILE_HEAD % b"image", MULTIPART, BODY_LIMIT),
    "view, JSON": ("/v1/models/efficientnet-lite0/predict", b'{"image": {"data": "', "application/json", BODY_LIMIT),
    "job, JSON": ("/v1/jobs", b'{"kind": "saliency", "image": {"data": "', "application/json", BODY_LIMIT),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_chunked_body_is_refused_as_it_passes_the_limit(tight, case):
    url, head, media, limit = CASES[case]
    status, answer, read = tight.portal.call(post_chunked, tight.app, url, head, media)
    assert (status, answer["error"]["code"]) == (413, "body_too_large"), answer
    assert limit < read <= limit + CHUNK, f"answered after reading {read} bytes; the limit is {limit}"
    assert tight.get("/healthz").status_code == 200


def test_a_declared_length_over_the_limit_is_refused_before_reading(tight):
    data = b"--b\r\n" + b"\0" * (IMAGE_LIMIT + FORM_SLACK)
    response = tight.post("/v1/images", content=data, headers={"content-type": MULTIPART})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_an_image_under_the_body_limit_but_over_the_image_limit_is_image_too_large(tight):
    response = tight.post("/v1/images", files={"file": ("f.png", b"\x89PNG" + b"\0" * IMAGE_LIMIT, "image/png")})
    assert response.status_code == 413 and response.json()["error"]["code"] == "image_too_large"


@pytest.mark.parametrize("url", ["/v1/images", "/v1/datasets", "/v1/models"])
def test_a_broken_multipart_body_is_400(tight, url):
    response = tight.post(url, content=b"no boundary here", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_multipart"


def test_one_image_part_only(tight):
    files = [("file", ("a.png", b"a", "image/png")), ("file", ("b.png", b"b", "image/png"))]
    response = tight.post("/v1/images", files=files)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_multipart"
