"""CORS for front ends on other origins: only the origins `CONVSCOPE_CORS_ORIGINS` names get answers.

Starlette's `CORSMiddleware`, outermost, so that preflights are answered for every route before
authentication, and error answers (401, 429, 503) carry the headers a browser needs to read them.
Credentials (cookies) are not used: the API key travels in `Authorization`, which is allowed by
name. With no origins configured no middleware is installed and no CORS header is ever sent.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")  # scheme://host[:port], no path, no trailing slash
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Accept", "Last-Event-ID", "X-Request-ID"]
EXPOSED_HEADERS = ["X-Request-ID", "Location", "Retry-After", "Server-Timing"]
PREFLIGHT_MAX_AGE_S = 600


def parse_origins(spec: str, keyed: bool) -> list[str]:
    """The allowed origins from the comma list; a clear `ValueError` for what can never match or is unsafe."""
    origins = [origin.strip() for origin in spec.split(",") if origin.strip()]
    if "*" in origins:
        if keyed:
            raise ValueError("CONVSCOPE_CORS_ORIGINS='*' is refused while API keys are configured: any web page a "
                             "key holder visits could then call the API; name the front ends' origins instead")
        return ["*"]
    bad = [origin for origin in origins if not ORIGIN.match(origin)]
    if bad:
        raise ValueError(f"CONVSCOPE_CORS_ORIGINS: {', '.join(map(repr, bad))} not an origin: write "
                         "scheme://host[:port], without a path or a trailing slash (e.g. https://viz.example.org)")
    return origins


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Add the middleware when origins are configured (`parse_origins`; call last, so it is the outermost)."""
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS, allow_credentials=False,
                           max_age=PREFLIGHT_MAX_AGE_S)
