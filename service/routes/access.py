"""`GET /v1/auth`: whether this service needs an API key, and whether the caller's is accepted.

Public on purpose: a front end asks it before anything else, so that it learns that a key is needed
without a refused request (a 401 is logged as an error by every browser console), and can check a
key a person has typed before it uses it. It tells nothing a refused `/v1` call would not: a key's
own tenant name only to the holder of that key.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from core.errors import Unauthorized
from service.auth import bearer

router = APIRouter(prefix="/v1", tags=["service"])


class AuthStatus(BaseModel):
    keys_required: bool = Field(description="whether every other `/v1` call needs `Authorization: Bearer <key>`")
    key: Literal["not_needed", "missing", "valid", "invalid"] = Field(
        description="the key this request carried: `not_needed` when the service is open (a key sent is ignored), "
                    "`missing` when none was sent, else whether it is accepted")
    tenant: str | None = Field(None, description="the tenant a valid key belongs to")


@router.get("/auth", operation_id="getAuth", response_model=AuthStatus)
async def auth_status(request: Request) -> AuthStatus:
    """Whether API keys are on, and whether this request's key (`Authorization: Bearer <key>`, optional) is
    accepted; never 401."""
    authenticator = request.app.state.auth
    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    if authenticator.open:
        return AuthStatus(keys_required=False, key="not_needed")
    if credentials is None:
        return AuthStatus(keys_required=True, key="missing")
    try:
        tenant = authenticator.tenant(credentials.credentials)
    except Unauthorized:
        return AuthStatus(keys_required=True, key="invalid")
    return AuthStatus(keys_required=True, key="valid", tenant=tenant)
