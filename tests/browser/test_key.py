"""The explorer's first visit to a service with API keys on: it asks `GET /v1/auth` and calls nothing that
needs a key before it has one, so the browser's console stays clean (the `page` fixture fails the test on any
console error or 401), and the notice and the highlighted field go away once a valid key is typed."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.browser.conftest import MODEL


def test_first_visit_with_keys_on_asks_for_the_key_and_logs_nothing(page, live):
    page.goto(f"{live.url}/ui/#atlas")  # a panel that lists datasets as it opens
    page.wait_for_load_state("networkidle")
    notice = page.locator("#global-error")
    expect(notice).to_be_visible()
    expect(notice).to_have_text("This service needs an API key: type it in the highlighted field at the top of the "
                                "page and press “Use key”.")
    expect(page.locator("#api-key-form")).to_have_class("field inline attention")

    page.fill("#api-key", "not-the-key")
    page.click("#api-key-save")
    expect(notice).to_contain_text("That API key was not accepted")

    page.fill("#api-key", live.key)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/v1/models" and r.request.method == "GET") as answer:
        page.click("#api-key-save")
    assert answer.value.status == 200
    expect(page.locator("#model-select")).to_contain_text(MODEL)
    expect(notice).to_be_hidden()
    expect(page.locator("#api-key-form")).not_to_have_class("field inline attention")
    expect(page.locator("#panel-atlas .error:visible")).to_have_count(0)
