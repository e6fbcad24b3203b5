"""API keys: 401 without a valid key, and one key cannot see another key's resources."""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient

from core.errors import Unauthorized
from service.app import create_app
from service.auth import Authenticator, parse_keys
from tests.conftest import encode, sample

PNG = encode(sample("coffee"))


@pytest.fixture(scope="module")
def keyed(settings):
    with TestClient(create_app(settings.model_copy(update={"api_keys": "alice:alice-secret,bob:bob-secret"}))) as c:
        yield c


def as_(who: str) -> dict:
    return {"Authorization": f"Bearer {who}-secret"}


def test_no_key_is_401_with_the_json_error(keyed):
    response = keyed.get("/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"
    assert keyed.get("/healthz").status_code == 200  # health needs no key


def test_wrong_key_is_401(keyed):
    response = keyed.get("/v1/models", headers={"Authorization": "Bearer mallory"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_auth_says_whether_a_key_is_needed_and_accepted_without_a_401(keyed, settings):
    """`GET /v1/auth` is public: a front end learns that a key is needed, and checks a typed one, with no refused
    request; the tenant is named only to the holder of its key."""
    assert keyed.get("/v1/auth").json() == {"keys_required": True, "key": "missing", "tenant": None}
    assert keyed.get("/v1/auth", headers=as_("alice")).json() == {"keys_required": True, "key": "valid", "tenant": "alice"}
    wrong = keyed.get("/v1/auth", headers={"Authorization": "Bearer mallory"})
    assert wrong.status_code == 200 and wrong.json() == {"keys_required": True, "key": "invalid", "tenant": None}
    with TestClient(create_app(settings)) as open_service:
        for headers in ({}, as_("alice")):
            answer = open_service.get("/v1/auth", headers=headers).json()
            assert answer == {"keys_required": False, "key": "not_needed", "tenant": None}


def test_builtin_model_is_shared(keyed):
    for who in ("alice", "bob"):
        ids = [m["id"] for m in keyed.get("/v1/models", headers=as_(who)).json()["models"]]
        assert "efficientnet-lite0" in ids


def test_images_are_private_to_their_key(keyed):
    image_id = keyed.post("/v1/images", files={"file": ("c.png", PNG, "image/png")}, headers=as_("alice")).json()["id"]
    assert keyed.get(f"/v1/images/{image_id}", headers=as_("alice")).status_code == 200
    assert keyed.get(f"/v1/images/{image_id}", headers=as_("bob")).status_code == 404
    body = {"image": {"id": image_id}}
    url = "/v1/models/efficientnet-lite0/predict"
    assert keyed.post(url, json=body, headers=as_("alice")).status_code == 200
    assert keyed.post(url, json=body, headers=as_("bob")).status_code == 404


@pytest.mark.parametrize("view, extra", [("predict", {}), ("activations", {"layer": "_blocks.2", "format": "json"}),
                                         ("occlusion", {"patch": 112, "stride": 112, "format": "json"})])
def test_an_input_prepared_for_one_key_is_not_answered_to_another(keyed, view, extra):
    """Alice's request leaves the prepared input in the cache, which is keyed by the image's content: bob, naming the
    same id, still gets 404 and no numbers, before and after alice's answer; and once the image has expired, so
    does alice, although the process had found it there well within `image_lease_s`."""
    png = encode(sample("rocket"))
    image_id = keyed.post("/v1/images", files={"file": ("r.png", png, "image/png")}, headers=as_("alice")).json()["id"]
    url, body = f"/v1/models/efficientnet-lite0/{view}", {"image": {"id": image_id}, **extra}
    ctx = keyed.app.state.ctx
    assert ctx.images.lease_s >= 10
    ctx.redis.pexpire(ctx.images._key("alice", image_id), 3000)  # expires in 3 s
    assert keyed.post(url, json=body, headers=as_("bob")).status_code == 404  # nothing cached yet
    assert keyed.post(url, json=body, headers=as_("alice")).status_code == 200
    assert keyed.post(url, json=body, headers=as_("alice")).status_code == 200  # the cached input, the image checked
    refused = keyed.post(url, json=body, headers=as_("bob"))
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "image_not_found"
    while ctx.redis.exists(ctx.images._key("alice", image_id)):
        time.sleep(0.1)
    assert keyed.post(url, json=body, headers=as_("alice")).status_code == 404


def test_keys_parse_with_and_without_tenant(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\ncarol:c-secret\nbare-secret\n")
    keys = parse_keys("alice:a-secret", keys_file)
    tenants = [k.tenant for k in keys]
    # a bare key's tenant: "key-" + the first 12 hex digits of its SHA-256 (the key itself is never kept)
    hashed = "key-" + hashlib.sha256(b"bare-secret").hexdigest()[:12]
    assert tenants == ["alice", "carol", hashed]
    auth = Authenticator(keys)
    assert auth.tenant("c-secret") == "carol" and auth.tenant("bare-secret") == hashed
    with pytest.raises(Unauthorized):
        auth.tenant("a-secre")
    assert Authenticator([]).tenant(None) is None  # open service


def test_open_service_listens_on_loopback_only(settings):
    from service.cli import bind_host

    assert bind_host(settings.model_copy(update={"host": "0.0.0.0"})) == "127.0.0.1"
    assert bind_host(settings.model_copy(update={"host": "0.0.0.0", "api_keys": "a:b"})) == "0.0.0.0"
