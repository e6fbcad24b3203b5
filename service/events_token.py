"""Events tokens: open one job's event stream from a browser without an API key in the URL.

`EventSource` cannot send an `Authorization` header, and an API key in a URL ends up in logs,
proxies and histories. Every Job the API returns to its owner therefore carries `events_token`,
accepted by `GET /v1/jobs/{id}/events?token=...` in place of the header. A token is

    <expiry, Unix seconds>.<owner, base64url>.<HMAC-SHA256(key, "events" | job id | owner | expiry), base64url>

so it opens that one job's events, for its owner, until it expires (`CONVSCOPE_EVENTS_TOKEN_TTL_S`),
and nothing else; it is checked before the job is looked up. The key is
`CONVSCOPE_EVENTS_TOKEN_SECRET`, or else a random key created once in Redis
(`<prefix>events-token-key`, `SET NX`), so every API process behind one Redis accepts every other's
tokens. Deleting that key revokes every outstanding token (each process re-reads it within a minute).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time

import redis

from core.errors import Unauthorized
from core.redis_client import redis_errors
from core.settings import Settings

KEY_REFRESH_S = 60.0  # how long a process trusts its copy of the Redis-held key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class EventsTokens:
    """Issues and checks events tokens with one HMAC key (from settings, or shared through Redis)."""

    def __init__(self, settings: Settings, client: redis.Redis):
        self.ttl_s = settings.events_token_ttl_s
        self._fixed = settings.events_token_secret.get_secret_value().encode() if settings.events_token_secret else None
        self._client, self._redis_key = client, f"{settings.redis_prefix}events-token-key"
        self._key: bytes | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def issue(self, job_id: str, owner: str | None, now: float | None = None) -> str:
        """A token that opens `job_id`'s events for `owner` for the next `ttl_s` seconds."""
        expiry = int(now if now is not None else time.time()) + self.ttl_s
        owner_part = _b64((owner or "").encode())
        return f"{expiry}.{owner_part}.{_b64(self._sign(self._secret(), job_id, owner_part, expiry))}"

    def verify(self, token: str, job_id: str) -> str | None:
        """The owner a valid token for `job_id` names; 401 `invalid_token` or `token_expired` otherwise."""
        try:
            expiry_text, owner_part, signature_part = token.split(".")
            expiry, signature, owner = int(expiry_text), _unb64(signature_part), _unb64(owner_part).decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise Unauthorized("the events token is malformed", code="invalid_token") from None
        if not (self._valid(self._secret(), job_id, owner_part, expiry, signature)
                or self._valid(self._secret(refresh=True), job_id, owner_part, expiry, signature)):
            raise Unauthorized("the events token is not valid for this job", code="invalid_token")
        if expiry < time.time():
            raise Unauthorized("the events token has expired; get the job again for a fresh one",
                               code="token_expired")
        return owner or None

    # The HMAC and its key.
    @staticmethod
    def _sign(key: bytes, job_id: str, owner_part: str, expiry: int) -> bytes:
        return hmac.new(key, f"events\n{job_id}\n{owner_part}\n{expiry}".encode(), hashlib.sha256).digest()

    def _valid(self, key: bytes, job_id: str, owner_part: str, expiry: int, signature: bytes) -> bool:
        return hmac.compare_digest(self._sign(key, job_id, owner_part, expiry), signature)

    def _secret(self, refresh: bool = False) -> bytes:
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            if refresh or self._key is None or time.monotonic() - self._read_at > KEY_REFRESH_S:
                with redis_errors():
                    self._client.set(self._redis_key, secrets.token_bytes(32), nx=True)
                    self._key = self._client.get(self._redis_key) or self._key
                self._read_at = time.monotonic()
            return self._key
