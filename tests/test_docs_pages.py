"""/docs and /redoc work without the internet: every script, style and icon they name is served here."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest


class Assets(HTMLParser):
    """The URLs a page loads: script src, link href, img src."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name) and tag in ("script", "link", "img"):
                self.urls.append(attrs[name])


def loaded(html: str) -> list[str]:
    parser = Assets()
    parser.feed(html)
    # Swagger UI and ReDoc are given their URLs in script text too (url: '...', Redoc spec-url).
    return parser.urls + re.findall(r"(?:url: ?'|spec-url=\")([^'\"]+)", html)


MEDIA = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_same_origin_assets(client, page):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "no-cache" in response.headers["cache-control"]
    urls = loaded(response.text)
    assert any(url.endswith(".js") for url in urls)
    assert not re.search(r"https?://", " ".join(urls)), urls  # nothing from a CDN or fonts service
    assert "fonts.googleapis" not in response.text and "cdn.jsdelivr" not in response.text
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind("."):]
        if suffix in MEDIA:
            assert asset.headers["content-type"].startswith(MEDIA[suffix]), (url, asset.headers["content-type"])
            assert "immutable" in asset.headers["cache-control"] and "max-age=31536000" in asset.headers["cache-control"]
            assert asset.headers["x-content-type-options"] == "nosniff"
            assert len(asset.content) > 1000


def test_swagger_ui_gets_its_script_and_stylesheet(client):
    urls = loaded(client.get("/docs").text)
    assert any(url.endswith("/swagger-ui-bundle.js") for url in urls)
    assert any(url.endswith("/swagger-ui.css") for url in urls)
    assert "/openapi.json" in urls


def test_unknown_assets_and_old_versions_are_404(client):
    from service.docs_pages import VERSION

    assert client.get(f"/docs/assets/{VERSION}/../../service/app.py").status_code == 404
    assert client.get(f"/docs/assets/{VERSION}/oauth2-redirect.html").status_code == 404
    old = client.get("/docs/assets/0.0.1/swagger-ui.css")
    assert old.status_code == 404 and old.json()["error"]["code"] == "asset_not_found"
