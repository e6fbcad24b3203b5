"""`/ui/`: the explorer, static files (plain ES modules, CSS, sample photos) served by the app itself.

The page drives only the public `/v1` API, as any front end would; this module adds no endpoint of
its own beyond the files. Every file is read once at start-up from `service/explorer/` into memory
with its media type (from a fixed table, not from the platform's `mimetypes`) and a strong ETag.
Answers carry a strict Content-Security-Policy (scripts and styles from this origin only, no inline
script; pictures also from `blob:` and `data:` URLs, which the page makes from fetched artifacts
and preview events), `nosniff`, and `Cache-Control: no-cache` (revalidated by ETag, so a new
release is seen at once) except for the sample photos, which never change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePosixPath

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from core.errors import NotFound

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".json": "application/json",
}
CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
REVALIDATE = "no-cache"
IMMUTABLE_DIRS = {"samples"}  # never change: cached for a day
DAY = "public, max-age=86400"
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str
    cache_control: str


@cache
def files() -> dict[str, StaticFile]:
    """Every servable file under service/explorer/, by its path relative to it."""
    root = resources.files("service") / "explorer"
    found: dict[str, StaticFile] = {}

    def walk(folder, prefix: PurePosixPath) -> None:
        for entry in folder.iterdir():
            path = prefix / entry.name
            if entry.is_dir():
                walk(entry, path)
            elif (media := MEDIA_TYPES.get(PurePosixPath(entry.name).suffix)) is not None:
                body = entry.read_bytes()
                cache_control = DAY if path.parts[0] in IMMUTABLE_DIRS else REVALIDATE
                found[str(path)] = StaticFile(body, media, f'"{hashlib.sha256(body).hexdigest()[:32]}"', cache_control)

    walk(root, PurePosixPath())
    return found


@router.api_route("/ui", methods=["GET", "HEAD"])
def explorer_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.api_route("/ui/{path:path}", methods=["GET", "HEAD"])
def explorer_file(path: str, request: Request) -> Response:
    """One of the explorer's files (`index.html` for `/ui/`); 404 for anything else. Names are looked up in
    the table built at start-up, never joined onto a filesystem path."""
    found = files().get(path or "index.html")
    if found is None:
        raise NotFound(f"the explorer has no file {path!r}", code="not_found")
    headers = {**SECURITY_HEADERS, "ETag": found.etag, "Cache-Control": found.cache_control}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)
