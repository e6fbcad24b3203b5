"""The explorer's files (`/ui/`): media types, caching, a strict Content-Security-Policy, nothing else served.

The page itself is tested in a real browser (tests/browser/test_explorer.py); here, what the HTTP layer
promises for its files, through the app's test client.
"""

from __future__ import annotations

import re

import pytest

from service.explorer import files


@pytest.mark.parametrize(("path", "media"), [("/ui/", "text/html"), ("/ui/js/main.js", "text/javascript"),
                                             ("/ui/js/panels/layers.js", "text/javascript"), ("/ui/style.css", "text/css"),
                                             ("/ui/favicon.svg", "image/svg+xml")])
def test_files_have_their_media_type_csp_and_revalidation(client, path, media):
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media)
    csp = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'" and csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'" and csp["connect-src"] == "'self'"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get(path, headers={"If-None-Match": '"stale"'}).status_code == 200


def test_sample_photos_are_cached_and_the_root_redirects(client):
    photo = client.get("/ui/samples/chelsea.jpg")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["cache-control"] == "public, max-age=86400"
    moved = client.get("/ui", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/ui/"
    assert client.head("/ui/").status_code == 200


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/../service/app.py", "/ui/%2e%2e/%2e%2e/pyproject.toml",
                                  "/ui/js/../../explorer.py", "/ui/.hidden", "/ui//etc/passwd"])
def test_nothing_else_is_served(client, path):
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_no_inline_script_or_handlers_in_the_pages():
    """The CSP forbids inline script; the files must not need it (no <script> body, no on* attributes)."""
    for name, found in files().items():
        if name.endswith(".html"):
            text = found.body.decode()
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), name
            assert not re.search(r"\son[a-z]+\s*=", text), name
            assert "style=" not in text, name


def test_the_explorer_adds_no_api_operation(client):
    assert not [path for path in client.get("/openapi.json").json()["paths"] if path.startswith("/ui")]
