"""Dataset uploads through the real app: archives read without trust, limits, ownership."""

from __future__ import annotations

import io
import os
import re
import tarfile
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from tests.conftest import BUILTIN_DATA, REDIS_URL, clean_prefix, encode, sample

STORED = re.compile(r"^(\d{5}\.(png|jpg|gif|bmp|tif|webp)|manifest\.json|meta\.json)$")


def small(name: str, side: int = 96) -> bytes:
    from PIL import Image

    return encode(np.asarray(Image.fromarray(sample(name)).resize((side, side))))


def data_dir(tmp: Path) -> Path:
    """A private data dir that shares the built-in model store (read only)."""
    root = tmp / "data"
    root.mkdir(parents=True)
    (root / "models").symlink_to((BUILTIN_DATA / "models").resolve())
    return root


@pytest.fixture()
def app_for(tmp_path):
    """Start the real app with settings overrides; yields a factory of test clients."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    clients, prefixes = [], []

    def make(**overrides):
        prefix = f"test-ds-{uuid.uuid4().hex[:8]}:"
        prefixes.append(prefix)
        settings = Settings(redis_url=REDIS_URL, redis_prefix=prefix, data_dir=overrides.pop("data_dir", None)
                            or data_dir(tmp_path / uuid.uuid4().hex[:6]), **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client, settings

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    for prefix in prefixes:
        clean_prefix(prefix)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def crafted_zip(victim: Path) -> bytes:
    """One good image beside every kind of member that must not be used (writestr keeps names verbatim)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("photos/cat.png", small("chelsea"))
        z.writestr("photos/", b"")
        z.writestr("../escaped.png", small("astronaut"))
        z.writestr("photos/../../escaped2.png", small("astronaut"))
        z.writestr(str(victim / "absolute.png"), small("coffee"))
        z.writestr("C:/windows.png", small("coffee"))
        link = zipfile.ZipInfo("photos/link.png")
        link.create_system, link.external_attr = 3, 0o120777 << 16
        z.writestr(link, str(victim / "target.png"))
        device = zipfile.ZipInfo("photos/null")
        device.create_system, device.external_attr = 3, 0o020666 << 16
        z.writestr(device, b"")
        z.writestr("notes.txt", b"not an image")
    return buf.getvalue()


def crafted_tar(victim: Path, compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as t:
        def add(name: str, data: bytes = b"", **fields):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in fields.items():
                setattr(info, key, value)
            t.addfile(info, io.BytesIO(data) if data else None)

        add("photos", type=tarfile.DIRTYPE)
        add("photos/cat.png", small("chelsea"))
        add("photos/rocket.png", small("rocket"))
        add("../escaped.png", small("astronaut"))
        add(str(victim / "absolute.png"), small("coffee"))
        add("photos/link.png", type=tarfile.SYMTYPE, linkname=str(victim / "target.png"))
        add("photos/hard.png", type=tarfile.LNKTYPE, linkname="photos/cat.png")
        add("photos/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("photos/disk", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
        add("photos/pipe", type=tarfile.FIFOTYPE)
        add("notes.txt", b"not an image")
    return buf.getvalue()


def check_nothing_escaped(root: Path, victim: Path, before: set[str], dataset_id: str) -> None:
    created = tree(root) - before
    assert all(p.startswith(f"datasets/{dataset_id}") or p == "datasets" for p in created), created
    assert all(STORED.match(Path(p).name) for p in created if p.count("/") == 2), created
    assert not list(victim.iterdir())
    assert not (root.parent / "escaped.png").exists() and not (root / "escaped.png").exists()
    assert not Path("escaped.png").exists() and not Path("../escaped.png").exists()


def test_crafted_zip_keeps_images_and_lists_every_refused_member(app_for, tmp_path):
    client, settings = app_for()
    victim = tmp_path / "victim"
    victim.mkdir()
    before = tree(settings.data_dir)
    r = client.post("/v1/datasets", files={"file": ("crafted.zip", crafted_zip(victim), "application/zip")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["count"] == 1
    reasons = {item["name"]: item["reason"] for item in body["rejected"]}
    assert reasons["../escaped.png"] == "path traversal (..)"
    assert reasons["photos/../../escaped2.png"] == "path traversal (..)"
    assert reasons[str(victim / "absolute.png")] == "absolute path"
    assert reasons["C:/windows.png"] == "absolute path"
    assert reasons["photos/link.png"] == "symbolic link"
    assert reasons["photos/null"] == "device or special file"
    assert reasons["notes.txt"].startswith("not an image")
    assert "photos/" not in reasons  # directories are not members to report
    check_nothing_escaped(settings.data_dir, victim, before, body["id"])
    info = client.get(f"/v1/datasets/{body['id']}").json()
    assert {k: info[k] for k in ("id", "count", "images", "rejected")} == {
        "id": body["id"], "count": 1, "images": [{"index": 0, "name": "photos/cat.png", "width": 96, "height": 96}],
        "rejected": body["rejected"]}


@pytest.mark.parametrize("compression", ["", "gz"])
def test_crafted_tar_keeps_images_and_lists_every_refused_member(app_for, tmp_path, compression):
    client, settings = app_for()
    victim = tmp_path / "victim"
    victim.mkdir()
    before = tree(settings.data_dir)
    r = client.post("/v1/datasets", files={"file": ("crafted.tar", crafted_tar(victim, compression), "x-tar")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["count"] == 2
    reasons = {item["name"]: item["reason"] for item in body["rejected"]}
    assert reasons == {
        "../escaped.png": "path traversal (..)",
        str(victim / "absolute.png"): "absolute path",
        "photos/link.png": "symbolic link",
        "photos/hard.png": "hard link",
        "photos/null": "device or special file",
        "photos/disk": "device or special file",
        "photos/pipe": "device or special file",
        "notes.txt": reasons["notes.txt"],
    }
    check_nothing_escaped(settings.data_dir, victim, before, body["id"])
    names = [image["name"] for image in client.get(f"/v1/datasets/{body['id']}").json()["images"]]
    assert names == ["photos/cat.png", "photos/rocket.png"]


def zeros_zip(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("cat.png", small("chelsea"))
        z.writestr("bomb.png", bytes(size))
    return buf.getvalue()


def test_zip_bomb_is_refused_before_it_is_inflated(app_for):
    client, settings = app_for()
    r = client.post("/v1/datasets", files={"file": ("bomb.zip", zeros_zip(8 << 20), "application/zip")})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "compression_ratio"
    assert not any((settings.data_dir / "datasets").glob("*/manifest.json"))


def test_tar_gz_bomb_is_refused_while_streaming(app_for):
    client, _ = app_for()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("bomb.png")
        info.size = 16 << 20
        t.addfile(info, io.BytesIO(bytes(info.size)))
    r = client.post("/v1/datasets", files={"file": ("bomb.tar.gz", buf.getvalue(), "application/gzip")})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "compression_ratio"


def test_total_size_and_member_count_limits(app_for):
    client, _ = app_for(max_dataset_bytes=4 << 20, max_archive_members=3)
    r = client.post("/v1/datasets", files={"file": ("big.zip", zeros_zip(5 << 20), "application/zip")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "archive_too_large"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(5):
            z.writestr(f"{i}.png", small("chelsea", 16))
    r = client.post("/v1/datasets", files={"file": ("many.zip", buf.getvalue(), "application/zip")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_members"
    files = [("files", (f"{i}.png", small("chelsea", 16), "image/png")) for i in range(5)]
    r = client.post("/v1/datasets", files=files)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_members"


def test_upload_body_limit(app_for):
    client, _ = app_for(max_dataset_upload_bytes=50_000)
    r = client.post("/v1/datasets", files={"file": ("big.zip", os.urandom(80_000), "application/zip")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_many_files_and_bad_uploads(app_for):
    client, _ = app_for()
    r = client.post("/v1/datasets", files=[("files", ("a.png", small("chelsea"), "image/png")),
                                           ("files", ("dir/b.jpg", small("coffee"), "image/jpeg")),
                                           ("files", ("c.txt", b"hello", "text/plain"))])
    assert r.status_code == 201, r.text
    assert r.json()["count"] == 2 and [x["name"] for x in r.json()["rejected"]] == ["c.txt"]
    r = client.post("/v1/datasets", files={"file": ("x.zip", b"definitely not a zip", "application/zip")})
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_an_archive"
    r = client.post("/v1/datasets", files=[("files", ("c.txt", b"hello", "text/plain"))])
    assert r.status_code == 422 and r.json()["error"]["code"] == "empty_dataset"
    r = client.post("/v1/datasets", json={"file": "x"})
    assert r.status_code == 400
    truncated = zeros_zip(1000)[:-30]
    r = client.post("/v1/datasets", files={"file": ("t.zip", truncated, "application/zip")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "corrupt_archive"
    assert client.get("/v1/datasets/../../etc").status_code == 404
    assert client.get("/v1/datasets/" + "0" * 32).json()["error"]["code"] == "dataset_not_found"
    assert client.get("/healthz").status_code == 200


def test_datasets_belong_to_the_uploading_key(app_for, tmp_path):
    client, _ = app_for(api_keys="alice:key-a,bob:key-b")
    r = client.post("/v1/datasets", headers={"Authorization": "Bearer key-a"},
                    files=[("files", ("a.png", small("chelsea"), "image/png"))])
    assert r.status_code == 201
    dataset = r.json()["id"]
    assert client.get(f"/v1/datasets/{dataset}", headers={"Authorization": "Bearer key-a"}).status_code == 200
    other = client.get(f"/v1/datasets/{dataset}", headers={"Authorization": "Bearer key-b"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "dataset_not_found"
    assert client.get(f"/v1/datasets/{dataset}").status_code == 401


def test_quota_and_expiry(tmp_path):
    from core.errors import NotFound, Overloaded
    from core.stores.datasets import DatasetStore, Upload

    settings = Settings(data_dir=tmp_path, max_datasets_per_key=1, dataset_ttl_s=60)
    store = DatasetStore(tmp_path, settings.dataset_ttl_s)

    def upload():
        data = small("chelsea", 32)
        return [Upload("a.png", io.BytesIO(data), len(data), archive=False)]

    dataset, _ = store.create(upload(), "alice", settings)
    with pytest.raises(Overloaded):
        store.create(upload(), "alice", settings)
    store.create(upload(), "bob", settings)
    expired = DatasetStore(tmp_path, ttl_s=-1)
    with pytest.raises(NotFound):
        expired.get(dataset.id, "alice")
    assert expired.sweep() == 2 and not any(p.name != ".tmp" for p in (tmp_path / "datasets").iterdir())
