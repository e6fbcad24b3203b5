"""The explorer's Units panel in a real browser: the current image's neuron groups over the photo with their legend
(a click on a group shows its icon and top channels), a unit's circuit (its input units' weight windows, then their
feature visualizations), and the circuit on the atlas's unit page's neighbour. Checked against the API's answers;
the screenshot is docs/ui/units.png."""

from __future__ import annotations

from urllib.parse import quote

from playwright.sync_api import expect

from tests.browser.conftest import MODEL, shot
from tests.browser.test_explorer import JOB_TIMEOUT_MS, natural_width, use_sample

LAYER = "_blocks.10._relu0"


def test_units_panel_groups_legend_and_circuit(explorer, live):
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-units")
    form = page.locator("#groups-params")
    form.locator("input[name=layer]").fill(LAYER)
    for name, value in (("groups", "4"), ("steps", "24"), ("size", "48")):
        form.locator(f"input[name={name}]").fill(value)
    page.click("#groups-run")
    card = page.locator('#units-jobs article[aria-label="neuron groups"]')
    expect(card).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#groups-picture")).to_be_visible()
    assert natural_width(page, "#groups-picture") == 224
    legend = page.locator("#groups-legend button")
    expect(legend).to_have_count(4)
    groups = live.client().get(f"/v1/jobs/{card.get_attribute('data-job')}/artifacts/groups.json").json()
    expect(legend.nth(2)).to_contain_text(f"channels {', '.join(map(str, groups[2]['channels'][:3]))}")

    legend.nth(2).click()
    expect(legend.nth(2)).to_have_attribute("aria-pressed", "true")
    detail = page.locator("#group-detail")
    expect(detail.locator("img.unit-image")).to_have_js_property("naturalWidth", 48)
    expect(detail.locator("ol.group-channels li")).to_have_count(len(groups[2]["channels"]))

    # A group's top channel opens that unit's circuit: the API's inputs, in its order, each with its window.
    detail.locator("ol.group-channels button").first.click()
    channel = groups[2]["channels"][0]
    circuit = live.client().get(f"/v1/models/{MODEL}/layers/{quote(LAYER, safe='')}/units/{channel}/circuit?k=8").json()
    inputs = page.locator("#circuit-view figure.circuit-input")
    expect(inputs).to_have_count(8)
    assert inputs.evaluate_all("all => all.map((f) => Number(f.dataset.channel))") == [i["channel"] for i in circuit["inputs"]]
    expect(inputs.first.locator("canvas.weight-grid")).to_be_visible()
    window = circuit["inputs"][0]["weights"]
    width, height = inputs.first.locator("canvas").evaluate("c => [c.width, c.height]")
    assert width * len(window) == height * len(window[0]) and min(width, height) >= 12

    page.click("#circuit-icons")
    icons = page.locator('#circuit-view article.job')
    expect(icons.first).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(inputs.locator("img.unit-icon")).to_have_count(8, timeout=30_000)
    shot(page, "units")
