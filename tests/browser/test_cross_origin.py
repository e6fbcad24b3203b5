"""A front end on another origin (another port on 127.0.0.1), with API keys on, in chromium: an image upload,
a predict, an activations PNG shown from a blob, a job followed live with EventSource and its events token, and
its heatmap artifact fetched with the key. Origins not configured get no CORS answer."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx

from tests.browser.conftest import MODEL

LAYER = "_blocks.2._relu1"


def test_a_page_on_another_origin_uses_the_api_with_a_key(page, live):
    assert live.origin_url != live.url and live.origin_url.startswith("http://127.0.0.1:")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{live.origin_url}/index.html#" + urlencode({"api": live.url, "key": live.key, "model": MODEL,
                                                             "layer": LAYER}))
    page.wait_for_function("document.getElementById('result').textContent.length > 0", timeout=120_000)
    result = json.loads(page.text_content("#result"))
    assert "error" not in result, f"{result['error']}\n{live.logs()}"
    assert result["done"] and result["steps"] == ["upload", "predict", "activations", "job", "heatmap"]

    assert result["image"]["width"] > 0 and len(result["predictions"]) == 3
    assert result["predictions"][0]["probability"] > 0.3  # chelsea the cat: a confident top-1
    assert result["activations"]["naturalWidth"] > 0 and result["activations"]["type"] == "image/png"
    assert result["activations"]["requestId"], "X-Request-ID is exposed to the page"
    assert result["job"]["hasToken"] and result["job"]["location"] == f"/v1/jobs/{result['job']['id']}"

    progress = result["progress"]
    assert len(progress) >= 1, result
    assert all(p["total"] == progress[0]["total"] for p in progress), progress  # total never changes
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress), progress
    assert result["end"]["status"] == "finished" and "heatmap.png" in result["end"]["artifacts"], result["end"]
    assert result["heatmap"]["naturalWidth"] > 0

    # The key never travelled in a URL: the events stream was opened with the token.
    assert not any(live.key in url for url in requests), [url for url in requests if live.key in url]
    assert any("/events?token=" in url for url in requests)
    assert page.locator("#activations").evaluate("img => img.naturalWidth") > 0
    assert page.locator("#heatmap").evaluate("img => img.naturalWidth") > 0
    assert page.text_content("#job-status") == "finished"


def test_origins_not_configured_get_no_cors_answer(live):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    with httpx.Client(base_url=live.url, timeout=30) as http:
        allowed = http.options(f"/v1/models/{MODEL}/predict", headers={"Origin": live.origin_url, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == live.origin_url
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

        refused = http.options(f"/v1/models/{MODEL}/predict", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in refused.headers, refused.headers
        read = http.get("/v1/models", headers={"Origin": "http://evil.example", **live.headers})
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers, read.headers
        other_port = http.get("/v1/models", headers={"Origin": "http://127.0.0.1:1", **live.headers})
        assert "access-control-allow-origin" not in other_port.headers
