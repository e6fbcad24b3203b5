"""`/docs` (Swagger UI) and `/redoc` with their scripts and styles served by the service itself.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN, so on a machine without internet
access they are blank. The assets here come from the `fastapi-offline` package (Swagger UI's
`swagger-ui-dist` and ReDoc's standalone bundle). Their URLs carry the package's version, so they
are cached for a year as immutable and change when the package is upgraded.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata, resources

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from core.errors import NotFound

PACKAGE = "fastapi_offline"
VERSION = metadata.version("fastapi-offline")
ASSETS = {  # file in the package's static/ → media type
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
ASSET_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"  # the pages name the current assets; revalidate them

router = APIRouter(include_in_schema=False)


def asset_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/docs/assets/{VERSION}/{name}"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    page = get_swagger_ui_html(openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
                               title=f"{app.title} — API reference", oauth2_redirect_url=None,
                               swagger_js_url=asset_url(request, "swagger-ui-bundle.js"),
                               swagger_css_url=asset_url(request, "swagger-ui.css"),
                               swagger_favicon_url=asset_url(request, "favicon.png"))
    page.headers["Cache-Control"] = PAGE_CACHE
    return page


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    page = get_redoc_html(openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
                          title=f"{app.title} — API reference", redoc_js_url=asset_url(request, "redoc.standalone.js"),
                          redoc_favicon_url=asset_url(request, "favicon.png"), with_google_fonts=False)
    page.headers["Cache-Control"] = PAGE_CACHE
    return page


@router.get("/docs/assets/{version}/{name}")
def asset(version: str, name: str) -> Response:
    """One bundled file; 404 for any other name or an old version."""
    if version != VERSION or name not in ASSETS:
        raise NotFound(f"no documentation asset {name!r} (version {version})", code="asset_not_found")
    return Response(_read(name), media_type=ASSETS[name], headers={"Cache-Control": ASSET_CACHE,
                                                            "X-Content-Type-Options": "nosniff"})


# Links to the internet that the bundles would follow on their own: ReDoc's sidebar shows Redocly's logo from
# their CDN (an <img> that hides itself when it fails to load); it is given an empty image instead, so
# that the page sends no request anywhere but here (tests/browser/test_docs_pages.py).
OFFLINE_PATCHES = {"redoc.standalone.js": [(b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"data:,")]}


@cache
def _read(name: str) -> bytes:
    data = (resources.files(PACKAGE) / "static" / name).read_bytes()
    for old, new in OFFLINE_PATCHES.get(name, []):
        data = data.replace(old, new)
    return data
