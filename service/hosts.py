"""Open mode's guard: a service with no API keys answers only its own host names and pages.

Without keys anyone who reaches the port may call it, which is why it listens on 127.0.0.1 only. A web page
can still reach it through the visitor's browser: by DNS rebinding (a hostile name that resolves to 127.0.0.1,
so the browser sends `Host: evil.example`), or by a cross-site form or `fetch` that posts without reading the
answer. So in open mode a request whose `Host` is not one of `allowed_hosts` gets 400 `bad_host`, and a
request that changes state (not GET, HEAD or OPTIONS) sent by a page of another origin gets 403
`foreign_origin`. Requests without an `Origin` header (curl, scripts, other services) are not browsers'
cross-site requests and pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import error_body

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_names(spec: str) -> frozenset[str]:
    return frozenset(name.strip().strip("[]").lower() for name in spec.split(",") if name.strip())


def _hostname(value: str) -> str | None:
    try:
        return urlsplit(f"//{value}").hostname
    except ValueError:  # a malformed port or bracket
        return None


class LocalOnly:
    def __init__(self, app: ASGIApp, hosts: frozenset[str], origins: frozenset[str]):
        self.app = app
        self.hosts = hosts
        self.origins = origins  # `CONVSCOPE_CORS_ORIGINS`: other origins the operator allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name: value.decode("latin-1") for name, value in scope["headers"] if name in (b"host", b"origin")}
        host = _hostname(headers.get(b"host", ""))
        if host not in self.hosts:
            return await self._refuse(scope, receive, send, 400, "bad_host",
                                      "this open service (no API keys) answers only the host names in "
                                      "CONVSCOPE_ALLOWED_HOSTS", {"host": headers.get(b"host")})
        origin = headers.get(b"origin")
        if origin is not None and scope["method"] not in SAFE_METHODS and not self._own(origin):
            return await self._refuse(scope, receive, send, 403, "foreign_origin",
                                      "this open service (no API keys) refuses changes sent by pages of other "
                                      "origins", {"origin": origin})
        await self.app(scope, receive, send)

    def _own(self, origin: str) -> bool:
        if "*" in self.origins or origin in self.origins:
            return True
        return origin != "null" and _hostname(urlsplit(origin).netloc) in self.hosts

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str,
                      details: dict) -> None:
        await JSONResponse(error_body(code, message, details), status_code=status)(scope, receive, send)
