"""The storage interface on both backends: a local folder, and a real S3 endpoint (moto's server over HTTP)."""

from __future__ import annotations

import pytest

from core.errors import Unavailable
from core.stores.storage import BucketStorage, LocalStorage, Missing, open_storage
from tests.conftest import bucket_settings, free_port, new_bucket


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_storage(bucket_settings(endpoint, new_bucket(endpoint), tmp_path))


def test_objects_are_written_whole_read_listed_and_deleted(storage, tmp_path):
    storage.put("models/records/a.json", b"{}")
    storage.put("models/records/b.json", b"[1]")
    storage.put("datasets/d1/meta.json", b"m")
    storage.put("datasets/d2/00000.png", b"p")
    assert storage.get("models/records/b.json") == b"[1]"
    assert set(storage.listed("models/records")) == {"models/records/a.json", "models/records/b.json"}
    assert storage.children("datasets") == ["d1", "d2"]
    before = storage.version("models/records/a.json")
    storage.put("models/records/a.json", b'{"changed": true}')
    assert storage.version("models/records/a.json") not in (None, before)
    storage.download("datasets/d2/00000.png", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"p"
    assert storage.modified("datasets/d2") is not None
    storage.delete_prefix("datasets/d2")
    assert storage.children("datasets") == ["d1"]
    storage.delete("models/records/a.json")
    assert storage.version("models/records/a.json") is None
    with pytest.raises(Missing):
        storage.get("models/records/a.json")
    assert storage.listed("nothing/here") == {} and storage.children("nothing") == []
    assert storage.readable() is None


def test_an_unreachable_bucket_is_unavailable_with_a_reason(tmp_path):
    settings = bucket_settings(f"http://127.0.0.1:{free_port()}", "nobody", tmp_path, storage_timeout_s=0.5)
    storage = open_storage(settings)
    assert isinstance(storage, BucketStorage)
    with pytest.raises(Unavailable) as raised:
        storage.get("models/records/a.json")
    assert raised.value.code == "storage_unavailable" and raised.value.status == 503
    assert "cannot be reached" in storage.readable()


def test_storage_urls():
    from core.settings import Settings

    assert isinstance(open_storage(Settings(storage_url="")), LocalStorage)
    assert open_storage(Settings(storage_url="file:///srv/x")).root.as_posix() == "/srv/x"
    with pytest.raises(ValueError):
        open_storage(Settings(storage_url="ftp://x"))
