"""Events tokens: scoped to one job and owner, expiring, tamper-evident, shared by every API process on one Redis."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from pydantic import SecretStr

from core.errors import Unauthorized
from core.logs import RedactSecrets, redact
from service.events_token import KEY_REFRESH_S, EventsTokens
from tests.conftest import REDIS_URL

JOB, OTHER = "a" * 32, "b" * 32


@pytest.fixture
def tokens(settings):
    return EventsTokens(settings, redis.Redis.from_url(REDIS_URL))


def flip(text: str, at: int = 5) -> str:
    """`text` with one base64 character changed (so one decoded byte differs)."""
    return text[:at] + ("B" if text[at] != "B" else "C") + text[at + 1:]


def code(call) -> str:
    with pytest.raises(Unauthorized) as refused:
        call()
    return refused.value.code


def test_a_token_opens_its_job_for_its_owner(tokens):
    assert tokens.verify(tokens.issue(JOB, "alice"), JOB) == "alice"
    assert tokens.verify(tokens.issue(JOB, None), JOB) is None  # open service: no owner


def test_another_job_expired_or_tampered_is_refused(tokens):
    token = tokens.issue(JOB, "alice")
    assert code(lambda: tokens.verify(token, OTHER)) == "invalid_token"
    expiry, owner, signature = token.split(".")
    assert code(lambda: tokens.verify(f"{expiry}.{owner}.{flip(signature)}", JOB)) == "invalid_token"
    assert code(lambda: tokens.verify(f"{int(expiry) + 3600}.{owner}.{signature}", JOB)) == "invalid_token"
    bob = tokens.issue(JOB, "bob").split(".")[1]
    assert code(lambda: tokens.verify(f"{expiry}.{bob}.{signature}", JOB)) == "invalid_token"
    for garbage in ("", "abc", "1.2", "x.y.z", "1.%%%.abc", "1.2.3.4"):
        assert code(lambda garbage=garbage: tokens.verify(garbage, JOB)) == "invalid_token"
    old = tokens.issue(JOB, "alice", now=time.time() - tokens.ttl_s - 1)
    assert code(lambda: tokens.verify(old, JOB)) == "token_expired"


def test_every_api_process_on_one_redis_accepts_the_others_tokens(settings, tokens):
    replica = EventsTokens(settings, redis.Redis.from_url(REDIS_URL))
    assert replica.verify(tokens.issue(JOB, "alice"), JOB) == "alice"
    assert tokens.verify(replica.issue(JOB, "bob"), JOB) == "bob"
    elsewhere = EventsTokens(settings.model_copy(update={"redis_prefix": settings.redis_prefix + "other:"}),
                             redis.Redis.from_url(REDIS_URL))
    try:
        assert code(lambda: elsewhere.verify(tokens.issue(JOB, "alice"), JOB)) == "invalid_token"
    finally:
        redis.Redis.from_url(REDIS_URL).delete(settings.redis_prefix + "other:events-token-key")


def test_deleting_the_redis_key_revokes_outstanding_tokens(settings, tokens):
    token = tokens.issue(JOB, "alice")
    redis.Redis.from_url(REDIS_URL).delete(f"{settings.redis_prefix}events-token-key")
    replica = EventsTokens(settings, redis.Redis.from_url(REDIS_URL))  # a process started now makes a new key
    assert code(lambda: replica.verify(token, JOB)) == "invalid_token"
    tokens._read_at -= KEY_REFRESH_S  # a minute later this process has re-read the key too
    assert code(lambda: tokens.verify(token, JOB)) == "invalid_token"
    assert tokens.verify(replica.issue(JOB, "alice"), JOB) == "alice"


def test_a_configured_secret_is_used_instead_of_redis(settings):
    one = EventsTokens(settings.model_copy(update={"events_token_secret": SecretStr("s" * 32)}), client=None)
    two = EventsTokens(settings.model_copy(update={"events_token_secret": SecretStr("t" * 32)}), client=None)
    assert one.verify(one.issue(JOB, "alice"), JOB) == "alice"
    assert code(lambda: two.verify(one.issue(JOB, "alice"), JOB)) == "invalid_token"


def test_tokens_are_redacted_from_log_lines():
    assert redact("GET /v1/jobs/x/events?token=123.YWxpY2U.sig&a=1") == "GET /v1/jobs/x/events?token=[redacted]&a=1"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/v1/jobs/x/events?token=SECRET", "1.1", 200), None)
    RedactSecrets().filter(record)
    assert "SECRET" not in record.getMessage() and "token=[redacted]" in record.getMessage()
