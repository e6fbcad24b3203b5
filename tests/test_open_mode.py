"""What keeps one service's shared parts its operator's: tenant names that stay inside their own Redis keys,
`/metrics` behind its token, and, with no keys (open mode), only this machine's host names and pages."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.jobs.keys import RESERVED_OWNERS
from service.app import create_app
from service.auth import parse_keys
from tests.conftest import encode, sample

PNG = encode(sample("coffee"))


@pytest.mark.parametrize("spec", ["queued:secret", "started:s", "-:s", "a:b:secret", "x" * 65 + ":s", "bad name:s",
                                  "alice:"])
def test_tenant_names_that_could_leave_their_keys_refuse_the_start(settings, spec):
    with pytest.raises(ValueError, match="refused|empty"):
        parse_keys(spec)
    with pytest.raises(ValueError):
        create_app(settings.model_copy(update={"api_keys": spec}))


def test_ordinary_tenant_names_and_bare_keys_are_taken():
    keys = parse_keys("alice:s1,team_b-2:s2,bare-secret")
    assert [k.tenant for k in keys][:2] == ["alice", "team_b-2"] and keys[2].tenant.startswith("key-")
    assert not {k.tenant for k in keys} & RESERVED_OWNERS


def test_metrics_need_their_token_when_one_is_set(settings):
    token = "m" * 24
    with TestClient(create_app(settings.model_copy(update={"metrics_token": SecretStr(token)}))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics").json()["error"]["code"] == "missing_metrics_token"
        wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 24})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_metrics_token"
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and "convscope" in answer.text
    with TestClient(create_app(settings)) as client:  # no token set: public, as before
        assert client.get("/metrics").status_code == 200


@pytest.fixture(scope="module")
def open_service(settings):
    with TestClient(create_app(settings.model_copy(update={"allowed_hosts": "localhost,127.0.0.1,::1,testserver"}))) as c:
        yield c


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:80", ""])
def test_an_open_service_answers_only_its_own_host_names(open_service, host):
    """DNS rebinding: a hostile name resolved to 127.0.0.1 reaches the port, but its `Host` header gives it away."""
    answer = open_service.get("/v1/models", headers={"Host": host})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_host"
    assert open_service.post("/v1/images", files={"file": ("c.png", PNG)}, headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"])
def test_an_open_service_answers_its_own_names_with_any_port(open_service, host):
    assert open_service.get("/v1/models", headers={"Host": host}).status_code == 200


def test_an_open_service_refuses_changes_sent_by_a_page_of_another_origin(open_service):
    """A cross-site form or fetch can post without reading the answer; the browser names the page's origin."""
    for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example:8000"):
        refused = open_service.post("/v1/images", files={"file": ("c.png", PNG)}, headers={"Origin": origin})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "foreign_origin", origin
    own = open_service.post("/v1/images", files={"file": ("c.png", PNG)}, headers={"Origin": "http://127.0.0.1:8000"})
    assert own.status_code == 201
    assert open_service.post("/v1/images", files={"file": ("c.png", PNG)}).status_code == 201  # no Origin: curl
    read = open_service.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers  # unreadable to that page


def test_a_keyed_service_leaves_hosts_to_its_keys(settings):
    keyed = settings.model_copy(update={"api_keys": "alice:a-secret"})
    with TestClient(create_app(keyed)) as client:
        answer = client.get("/v1/models", headers={"Host": "convscope.example", "Authorization": "Bearer a-secret"})
        assert answer.status_code == 200
