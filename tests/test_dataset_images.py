"""A dataset's images through the real app, with API keys: `GET /v1/datasets/{id}/images/{index}` for the owner
only (PNG, `?size=` thumbnails), and `{"dataset": id, "index": n}` accepted wherever an image is, in forward
views and jobs; datasets keep their name, newest first; models show their upload date."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
import zipfile
from datetime import datetime

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from core.jobs.store import JobStore
from core.settings import Settings
from tests.conftest import REDIS_URL, clean_prefix, encode, sample
from tests.jobs.conftest import delete_rq_keys, job_ids
from tests.test_datasets import data_dir

ALICE, BOB = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """(test client with keys alice and bob, its settings), on a private data dir and Redis prefix."""
    from service.app import create_app

    settings = Settings(redis_url=REDIS_URL, redis_prefix=f"test-dsi-{uuid.uuid4().hex[:8]}:",
                        data_dir=data_dir(tmp_path_factory.mktemp("dsi")), api_keys="alice:key-a,bob:key-b",
                        job_queue=f"test-dsi-{uuid.uuid4().hex[:8]}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, settings
    delete_rq_keys(REDIS_URL, {settings.job_queue} | job_ids(settings))
    clean_prefix(settings.redis_prefix)


def photo(name: str, width: int, height: int) -> bytes:
    return encode(np.asarray(Image.fromarray(sample(name)).resize((width, height))))


@pytest.fixture(scope="module")
def uploaded(keyed) -> dict:
    """Alice's dataset of two photos (a JPEG and a PNG) and the bytes she sent."""
    client, _ = keyed
    sent = {"chelsea.png": photo("chelsea", 120, 80),
            "coffee.jpg": encode(np.asarray(Image.fromarray(sample("coffee")).resize((64, 96))), "JPEG", quality=90)}
    r = client.post("/v1/datasets", headers=ALICE, files=[("files", (n, d, "image/png")) for n, d in sent.items()])
    assert r.status_code == 201, r.text
    return r.json() | {"sent": sent}


def decoded(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def test_the_owner_reads_each_image_as_png(keyed, uploaded):
    client, _ = keyed
    for index, name in enumerate(uploaded["sent"]):
        r = client.get(f"/v1/datasets/{uploaded['id']}/images/{index}", headers=ALICE)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        want = np.asarray(Image.open(io.BytesIO(uploaded["sent"][name])).convert("RGB"))
        assert np.array_equal(decoded(r.content), want)  # the JPEG as decoded, not re-encoded lossily


def test_another_key_and_no_key_get_nothing(keyed, uploaded):
    client, _ = keyed
    r = client.get(f"/v1/datasets/{uploaded['id']}/images/0", headers=BOB)
    assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_not_found"
    assert client.get(f"/v1/datasets/{uploaded['id']}/images/0").status_code == 401


def test_size_makes_a_thumbnail_that_keeps_the_aspect_ratio(keyed, uploaded):
    client, _ = keyed
    r = client.get(f"/v1/datasets/{uploaded['id']}/images/0?size=48", headers=ALICE)
    assert r.status_code == 200 and decoded(r.content).shape == (32, 48, 3)  # 120×80 → 48×32
    bigger = client.get(f"/v1/datasets/{uploaded['id']}/images/1?size=512", headers=ALICE)
    assert decoded(bigger.content).shape == (96, 64, 3)  # never enlarged
    for bad in ("0", "4", "100000", "big"):
        r = client.get(f"/v1/datasets/{uploaded['id']}/images/0?size={bad}", headers=ALICE)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", bad


def test_an_index_outside_the_dataset(keyed, uploaded):
    client, _ = keyed
    r = client.get(f"/v1/datasets/{uploaded['id']}/images/2", headers=ALICE)
    assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_image_not_found"
    assert r.json()["error"]["details"] == {"count": 2}
    for bad in ("-1", "x", "1.5"):
        r = client.get(f"/v1/datasets/{uploaded['id']}/images/{bad}", headers=ALICE)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", bad
    r = client.get(f"/v1/datasets/{'0' * 32}/images/0", headers=ALICE)
    assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_not_found"


def test_predict_on_a_dataset_image_is_predict_on_its_file(keyed, uploaded):
    client, _ = keyed
    url = f"/v1/models/{MODEL}/predict"
    ref = client.post(url, headers=ALICE, json={"image": {"dataset": uploaded["id"], "index": 1}, "top_k": 3})
    inline = client.post(url, headers=ALICE, json={"image": {"data": base64.b64encode(
        uploaded["sent"]["coffee.jpg"]).decode()}, "top_k": 3})
    assert ref.status_code == 200, ref.text
    assert ref.json() == inline.json()
    occlusion = client.post(f"/v1/models/{MODEL}/occlusion", headers=ALICE, json={
        "image": {"dataset": uploaded["id"], "index": 0}, "patch": 112, "stride": 112, "format": "json"})
    assert occlusion.status_code == 200, occlusion.text


@pytest.mark.parametrize(("image", "status", "code"), [
    ({"dataset": "0" * 32, "index": 0}, 404, "dataset_not_found"),
    ({"index": 0}, 422, "validation_error"),
    ({"dataset": "x", "index": -1}, 422, "validation_error"),
    ({"dataset": "x", "index": 0, "id": "y"}, 422, "validation_error"),
])
def test_bad_dataset_references_are_refused(keyed, image, status, code):
    client, _ = keyed
    r = client.post(f"/v1/models/{MODEL}/predict", headers=ALICE, json={"image": image})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


def test_a_reference_past_the_last_image_or_to_another_keys_dataset(keyed, uploaded):
    client, _ = keyed
    url = f"/v1/models/{MODEL}/predict"
    past = client.post(url, headers=ALICE, json={"image": {"dataset": uploaded["id"], "index": 2}})
    assert past.status_code == 404 and past.json()["error"]["code"] == "dataset_image_not_found"
    theirs = client.post(url, headers=BOB, json={"image": {"dataset": uploaded["id"], "index": 0}})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "dataset_not_found"
    job = client.post("/v1/jobs", headers=BOB, json={"kind": "gradcam", "model": MODEL,
                                                     "image": {"dataset": uploaded["id"], "index": 0}})
    assert job.status_code == 404 and job.json()["error"]["code"] == "dataset_not_found"


def test_a_job_keeps_the_dataset_images_bytes(keyed, uploaded):
    """The job's input is the image's file itself, as if it had been sent: the same spec digest, the same bytes
    kept for the worker (`workers/inputs.py` reads them like any other image)."""
    client, settings = keyed
    r = client.post("/v1/jobs", headers=ALICE, json={"kind": "gradcam", "model": MODEL,
                                                     "image": {"dataset": uploaded["id"], "index": 0}})
    assert r.status_code == 202, r.text
    store = JobStore(redis.Redis.from_url(REDIS_URL), settings.redis_prefix, settings.artifact_ttl_s)
    record = store.records.get(r.json()["id"])
    sent = uploaded["sent"]["chelsea.png"]
    assert record.spec.inputs["image"] == hashlib.sha256(sent).hexdigest()
    assert store.files.get_input(record.spec.inputs["image"]) == sent
    client.delete(f"/v1/jobs/{r.json()['id']}", headers=ALICE)


def test_a_multipart_job_may_name_a_dataset_image_in_its_spec(keyed, uploaded):
    client, _ = keyed
    spec = f'{{"kind": "gradcam", "model": "{MODEL}", "image": {{"dataset": "{uploaded["id"]}", "index": 1}}}}'
    r = client.post("/v1/jobs", headers=ALICE, files={"spec": (None, spec)})
    assert r.status_code == 202, r.text
    client.delete(f"/v1/jobs/{r.json()['id']}", headers=ALICE)


def test_datasets_keep_their_name_newest_first(keyed, uploaded):
    client, _ = keyed
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pets/cat.png", photo("chelsea", 32, 32))
    zipped = client.post("/v1/datasets", headers=ALICE, files={"file": ("holiday photos.zip", archive.getvalue())})
    named = client.post("/v1/datasets", headers=ALICE, data={"name": "  my\x07 cats "},
                        files=[("files", ("a.png", photo("chelsea", 32, 32), "image/png"))])
    assert zipped.status_code == 201 and named.status_code == 201, (zipped.text, named.text)
    assert zipped.json()["name"] == "holiday photos.zip" and named.json()["name"] == "my cats"
    listed = client.get("/v1/datasets", headers=ALICE).json()["datasets"]
    assert [d["id"] for d in listed][:3] == [named.json()["id"], zipped.json()["id"], uploaded["id"]]
    assert [d["name"] for d in listed][:3] == ["my cats", "holiday photos.zip", "chelsea.png and 1 more"]
    times = [datetime.fromisoformat(d["created_at"]) for d in listed]
    assert times == sorted(times, reverse=True)
    assert client.get(f"/v1/datasets/{uploaded['id']}", headers=ALICE).json()["name"] == "chelsea.png and 1 more"
    for d in listed[:2]:
        client.delete(f"/v1/datasets/{d['id']}", headers=ALICE)


def test_builtin_models_have_no_upload_date(keyed):
    client, _ = keyed
    models = client.get("/v1/models", headers=ALICE).json()["models"]
    builtin = next(m for m in models if m["id"] == MODEL)
    assert builtin["uploaded_at"] is None
    assert client.get(f"/v1/models/{MODEL}", headers=ALICE).json()["uploaded_at"] is None


def test_two_uploads_under_one_name_tell_apart_by_date_newest_first(keyed):
    from tests.onnx_builders import ClassicNet, export, seeded

    client, _ = keyed
    onnx = export(seeded(ClassicNet(classes=4), size=64), opset=13, size=64)
    made = []
    for _ in range(2):
        r = client.post("/v1/models", headers=ALICE, files={"file": ("tiny.onnx", onnx)}, data={"name": "twin"})
        assert r.status_code == 201, r.text
        made.append(r.json())
    first, second = (datetime.fromisoformat(m["uploaded_at"]) for m in made)
    assert first < second
    models = client.get("/v1/models", headers=ALICE).json()["models"]
    assert models[0]["source"] == "builtin"
    uploads = [m for m in models if m["source"] == "upload"]
    assert [m["id"] for m in uploads][:2] == [made[1]["id"], made[0]["id"]]
    assert [m["uploaded_at"] for m in uploads][:2] == [made[1]["uploaded_at"], made[0]["uploaded_at"]]
    for m in made:
        client.delete(f"/v1/models/{m['id']}", headers=ALICE)
