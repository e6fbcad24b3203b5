"""Job events from a browser: the Job's `events_token` opens its stream without the API key (EventSource),
the key header still works (fetch streaming), and the token never reaches a log. Real app, worker, Redis."""

from __future__ import annotations

import io
import itertools
import json
import logging
import time

import pytest
from fastapi.testclient import TestClient

from core.logs import JsonFormatter
from service.app import create_app
from tests.conftest import encode, sample
from tests.jobs.conftest import read_events
from tests.test_events_token import flip

ALICE, BOB = {"Authorization": "Bearer key-c"}, {"Authorization": "Bearer key-d"}  # tenants of their own here
CROPS = itertools.count(int(time.time() * 1000) % 50 + 1)


@pytest.fixture(scope="module")
def keyed(jobs_client, job_settings):
    """An app with API keys on the session's queue (served by the workers `jobs_client` started)."""
    settings = job_settings.model_copy(update={"api_keys": "carol:key-c,dave:key-d"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def log_output(keyed):
    """Everything the app logs while the test runs (its JSON handler, redaction included)."""
    handler = next(h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter))
    captured = io.StringIO()
    previous = handler.setStream(captured)
    yield captured
    handler.setStream(previous)


def submit_as(client, headers: dict, cat_png: bytes) -> dict:
    """A saliency job on a cat image no earlier job used (so it runs rather than coming from the cache)."""
    image = encode(sample("chelsea")[next(CROPS):])
    response = client.post("/v1/jobs", files={"image": ("cat.png", image, "image/png")},
                           data={"spec": json.dumps({"kind": "saliency", "model": "efficientnet-lite0"})}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def test_the_token_opens_the_stream_without_a_key_and_never_reaches_a_log(keyed, cat_png, log_output):
    job = submit_as(keyed, ALICE, cat_png)
    token = job["events_token"]
    assert token and keyed.get(f"/v1/jobs/{job['id']}", headers=ALICE).json()["events_token"]
    with keyed.stream("GET", f"/v1/jobs/{job['id']}/events?token={token}") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        events = read_events(stream)
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "finished"
    assert events[-1]["data"]["events_token"] is None
    logging.getLogger("uvicorn.access").warning('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET",
                                                f"/v1/jobs/{job['id']}/events?token={token}", "1.1", 200)
    written = log_output.getvalue()
    assert '"route": "/v1/jobs/{job_id}/events"' in written and "token=[redacted]" in written
    assert token not in written and token.split(".")[-1] not in written


def test_fetch_streaming_with_the_key_header_still_works(keyed, cat_png):
    job = submit_as(keyed, ALICE, cat_png)
    with keyed.stream("GET", f"/v1/jobs/{job['id']}/events", headers=ALICE) as stream:
        assert stream.status_code == 200
        assert read_events(stream)[-1]["event"] == "end"


def test_a_token_opens_only_its_own_job_for_its_own_time(keyed, cat_png):
    alice_job, bob_job = submit_as(keyed, ALICE, cat_png), submit_as(keyed, BOB, cat_png)

    def refused(job_id: str, token: str) -> str:
        response = keyed.get(f"/v1/jobs/{job_id}/events", params={"token": token})
        assert response.status_code == 401, response.text
        return response.json()["error"]["code"]

    assert refused(alice_job["id"], bob_job["events_token"]) == "invalid_token"  # another job's token
    expiry, owner, signature = alice_job["events_token"].split(".")
    assert refused(alice_job["id"], f"{expiry}.{owner}.{flip(signature)}") == "invalid_token"  # tampered
    assert refused(alice_job["id"], f"{int(expiry) + 9999}.{owner}.{signature}") == "invalid_token"  # longer life
    tokens = keyed.app.state.jobs.tokens
    assert refused(alice_job["id"], tokens.issue(alice_job["id"], "alice", now=time.time() - 3600)) == "token_expired"
    assert keyed.get(f"/v1/jobs/{alice_job['id']}/events").json()["error"]["code"] == "missing_api_key"
    # a valid token (signed for alice) for a job that is not alice's, or gone: 404 as for any other id
    gone = keyed.get("/v1/jobs/0123456789abcdef/events", params={"token": tokens.issue("0123456789abcdef", "alice")})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "job_not_found"
    mine = tokens.issue(bob_job["id"], "alice")
    assert keyed.get(f"/v1/jobs/{bob_job['id']}/events", params={"token": mine}).status_code == 404
    # the token is for events only: no other route takes it
    assert keyed.get(f"/v1/jobs/{alice_job['id']}", params={"token": alice_job["events_token"]}).status_code == 401
