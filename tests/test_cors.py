"""CORS: answers only for the origins CONVSCOPE_CORS_ORIGINS names, preflight on every route, `*` refused with keys."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cors import parse_origins

FRONT = "http://127.0.0.1:5173"


@pytest.fixture(scope="module")
def cors(settings):
    keyed = settings.model_copy(update={"api_keys": "alice:alice-secret", "cors_origins": f"{FRONT}, https://viz.example.org"})
    with TestClient(create_app(keyed), raise_server_exceptions=False) as client:
        yield client


def preflight(client, path: str, origin: str, method: str = "POST"):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": "authorization, content-type"})


@pytest.mark.parametrize("path, method", [("/v1/models/efficientnet-lite0/predict", "POST"), ("/v1/jobs", "POST"),
                                          ("/v1/jobs/abc/events", "GET"), ("/v1/jobs/abc", "DELETE"),
                                          ("/v1/images", "POST"), ("/healthz", "GET")])
def test_preflight_from_an_allowed_origin_is_answered_on_every_route(cors, path, method):
    response = preflight(cors, path, FRONT, method)
    assert response.status_code == 200  # before authentication: a preflight carries no key
    assert response.headers["access-control-allow-origin"] == FRONT
    assert method in response.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in response.headers  # keys travel in a header, not cookies


def test_actual_answers_expose_request_id_location_and_retry_after(cors):
    response = cors.get("/v1/models", headers={"Origin": FRONT, "Authorization": "Bearer alice-secret"})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == FRONT
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "location", "retry-after"} <= exposed
    # errors are readable by the page too (its JSON message is what a front end shows)
    refused = cors.get("/v1/models", headers={"Origin": FRONT})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == FRONT


def test_another_origin_gets_no_allow_origin(cors):
    other = "http://evil.example.com"
    assert "access-control-allow-origin" not in preflight(cors, "/v1/jobs", other).headers
    response = cors.get("/v1/models", headers={"Origin": other, "Authorization": "Bearer alice-secret"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_no_origins_configured_means_no_cors_headers(client):
    response = preflight(client, "/v1/models/efficientnet-lite0/predict", FRONT)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": FRONT}).headers


def test_star_is_refused_at_start_up_while_keys_are_configured(settings):
    with pytest.raises(ValueError, match="API keys"):
        create_app(settings.model_copy(update={"api_keys": "alice:alice-secret", "cors_origins": "*"}))
    assert parse_origins("*", keyed=False) == ["*"]  # an open (loopback-only) service may allow any origin


@pytest.mark.parametrize("spec", ["https://viz.example.org/", "viz.example.org", "https://viz.example.org/app"])
def test_origins_that_can_never_match_are_refused(spec):
    with pytest.raises(ValueError, match="scheme://host"):
        parse_origins(spec, keyed=True)
