"""/docs (Swagger UI) and /redoc render in chromium from the service alone: every request the page would send
anywhere but the service itself is aborted and recorded, and none may be attempted."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import shot


@pytest.fixture
def offline(page, live):
    """`page` with every request that leaves the service aborted; returns the list of those attempted."""
    service = urlsplit(live.url).netloc
    elsewhere: list[str] = []

    def route(route):
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != service:
            elsewhere.append(url)
            return route.abort("internetdisconnected")
        return route.continue_()

    page.route("**/*", route)
    return elsewhere


def test_swagger_ui_renders_without_the_internet(page, live, offline):
    page.goto(f"{live.url}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    assert page.locator(".swagger-ui .opblock").count() >= 20
    for operation in ("getJobEvents", "predict", "submitJob"):
        assert page.locator(f"#operations-jobs-{operation}, [id$='-{operation}']").count() >= 1, operation
    assert "convscope" in page.locator(".swagger-ui .info .title").inner_text()
    page.wait_for_load_state("networkidle")
    assert offline == [], f"/docs tried to reach the internet: {offline}"
    shot(page, "docs", full_page=False)


def test_redoc_renders_without_the_internet(page, live, offline):
    page.goto(f"{live.url}/redoc")
    page.wait_for_selector("h1:has-text('convscope')", timeout=30_000)
    operation = page.locator("[data-section-id='operation/predict']")
    operation.wait_for(state="attached", timeout=30_000)
    assert operation.locator("h2").first.inner_text().strip().lower() == "predict"
    assert page.locator("[data-section-id='operation/getJobEvents']").count() == 1
    page.wait_for_load_state("networkidle")
    assert offline == [], f"/redoc tried to reach the internet: {offline}"
    shot(page, "redoc", full_page=False)
