"""API keys: each key is a tenant; every `/v1` call names one with `Authorization: Bearer <key>`.

Keys come from `CONVSCOPE_API_KEYS` (comma-separated, each `tenant:key` or a bare key) and/or
`CONVSCOPE_API_KEYS_FILE` (one per line, same forms, `#` comments). A bare key's tenant is
`key-` + the first 12 hex digits of its SHA-256, so keys themselves are never stored or logged.
With no keys configured the service is open (one tenant, `None`) and listens on 127.0.0.1 only.

The caller's tenant is kept in a context variable for the duration of the request, so that every
lookup (`AppContext.model`, image ids, jobs) applies ownership without each route repeating it.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.errors import Unauthorized
from core.jobs.keys import RESERVED_OWNERS

# A tenant's name goes into Redis keys (`jobs:<tenant>`, `image:<tenant>:<id>`): letters, digits, `_` and `-`
# only, so that no name reaches outside its own keys.
TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

current_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_owner", default=None)
bearer = HTTPBearer(auto_error=False, description="an API key from CONVSCOPE_API_KEYS")


@dataclass(frozen=True)
class Key:
    tenant: str
    secret: bytes


def parse_keys(spec: str, file: Path | None = None) -> list[Key]:
    """Keys from the setting and the keys file; empty when the service is open. A tenant name that could
    collide with the service's own Redis keys refuses the start (ValueError), before anything is served."""
    entries = [e.strip() for e in spec.split(",")]
    if file is not None:
        entries += [line.strip() for line in Path(file).read_text().splitlines() if not line.lstrip().startswith("#")]
    keys = []
    for entry in filter(None, entries):
        tenant, _, secret = entry.rpartition(":")
        if not tenant:
            tenant = "key-" + hashlib.sha256(secret.encode()).hexdigest()[:12]
        if not TENANT_NAME.match(tenant) or tenant in RESERVED_OWNERS:
            raise ValueError(f"API key tenant name {tenant!r} is refused: use 1 to 64 letters, digits, `_` or `-`, "
                             f"and none of {sorted(RESERVED_OWNERS)}")
        if not secret:
            raise ValueError(f"API key of tenant {tenant!r} is empty")
        keys.append(Key(tenant, secret.encode()))
    return keys


class Authenticator:
    """Maps a bearer token to its tenant, comparing against every key in constant time."""

    def __init__(self, keys: list[Key]):
        self.keys = keys

    @property
    def open(self) -> bool:
        return not self.keys

    def tenant(self, token: str | None) -> str | None:
        if self.open:
            return None
        if not token:
            raise Unauthorized("this service needs an API key: send `Authorization: Bearer <key>`", code="missing_api_key")
        given = token.encode()
        found = None
        for key in self.keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(given, key.secret):
                found = key.tenant
        if found is None:
            raise Unauthorized("the API key is not valid", code="invalid_api_key")
        return found


async def require_key(request: Request) -> str | None:
    """Router dependency for `/v1`: authenticate, take one of the key's requests (`service.tenants`: 429
    `rate_limited` past its rate) and remember the caller's tenant."""
    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    return await enter_as(request, request.app.state.auth.tenant(credentials.credentials if credentials else None))


async def enter_as(request: Request, tenant: str | None) -> str | None:
    """The request is `tenant`'s: take one of the key's requests (429 `rate_limited` past its rate) and remember
    the caller's tenant for the rest of the request."""
    await request.app.state.tenants.admit(tenant)
    current_owner.set(tenant)
    request.state.owner = tenant
    return tenant


def visible(owner: str | None) -> bool:
    """Whether a resource owned by `owner` (None: shared, e.g. built-in models) is the caller's to see."""
    return owner is None or owner == current_owner.get()


async def require_metrics_token(request: Request) -> None:
    """`/metrics` when `CONVSCOPE_METRICS_TOKEN` is set: that bearer token only (the figures name worker hosts and
    the storage URL, which are the operator's to see, not every tenant's)."""
    token = request.app.state.ctx.settings.metrics_token
    if token is None:
        return
    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    if credentials is None:
        raise Unauthorized("/metrics needs the metrics token: send `Authorization: Bearer <token>`",
                           code="missing_metrics_token")
    if not hmac.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise Unauthorized("the metrics token is not valid", code="invalid_metrics_token")
