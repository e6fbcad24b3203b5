"""The explorer read by a first-time user (issue 31), in a real browser against the real service, worker and Redis:
a dataset uploaded by another client shows its images everywhere; the atlas deconvnet card names the dataset image
it explains and its input is that image; results land in view; the Jobs panel says what each job was and reopens a
Grad-CAM; at 420 px no panel is wider than the window. (Opening `#atlas` before typing the key leaves no error box:
`test_key.py`.)"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import MODEL, shot
from tests.browser.test_explorer import JOB_TIMEOUT_MS, _image_id, use_sample
from tests.conftest import encode, sample

LAYER = "_blocks.5._relu1"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")


@pytest.fixture(scope="module")
def dataset(live) -> dict:
    """Five photos uploaded with httpx, not from the page: the page has none of their files."""
    sent = {f"{name}.png": encode(sample(name)) for name in PHOTOS}
    with live.client() as http:
        created = http.post("/v1/datasets", data={"name": "photos from another client"},
                            files=[("files", (name, data, "image/png")) for name, data in sent.items()])
    assert created.status_code == 201, created.text
    return created.json() | {"sent": sent}


def in_viewport(page, locator) -> bool:
    """Whether the top of the element is on screen (the card may be taller than the window)."""
    box = locator.bounding_box()
    height = page.viewport_size["height"]
    return box is not None and 0 <= box["y"] < height and box["y"] + min(box["height"], 40) <= height


def loaded(locator) -> None:
    """Every <img> under `locator` has arrived (the thumbnails are fetched from the API as they are shown)."""
    for img in locator.all():
        expect(img).not_to_have_js_property("naturalWidth", 0)


def test_a_dataset_from_another_client_shows_its_images_in_every_view(explorer, live, dataset):
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-datasets")
    chooser = page.locator("#dataset-select")
    chooser.select_option(dataset["id"])
    option = chooser.locator(f'option[value="{dataset["id"]}"]')
    expect(option).to_contain_text("photos from another client · 5 images")
    expect(page.locator("#dataset-about")).to_contain_text("kept until")

    actions = page.locator("#dataset-actions")
    top = actions.locator(".card", has=page.locator("#ds-top_activations"))
    top.locator("input[name=layer]").fill(LAYER)
    top.locator("input[name=channel]").fill("7")
    top.locator("input[name=k]").fill("3")
    page.click("#ds-top_activations")
    card = page.locator('#dataset-results article[aria-label="top_activations"]')
    assert in_viewport(page, card), "the top-activations card is not where the user looks"
    expect(card).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    rows = card.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(card.locator("tbody img.thumb")).to_have_count(3)
    loaded(card.locator("tbody img.thumb"))
    top_json = live.client().get(f"/v1/jobs/{card.get_attribute('data-job')}/artifacts/top.json").json()
    names = card.locator("tbody img.thumb").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert names == [t["name"] for t in top_json]

    actions.locator(".card", has=page.locator("#ds-embedding")).locator("select[name=method]").select_option("pca")
    page.click("#ds-embedding")
    embedding = page.locator('#dataset-results article[aria-label="embedding"]')
    assert in_viewport(page, embedding)
    actions.locator(".card", has=page.locator("#ds-neighbors")).locator("input[name=k]").fill("3")
    page.click("#ds-neighbors")
    neighbours = page.locator('#dataset-results article[aria-label="neighbors"]')
    assert in_viewport(page, neighbours)
    expect(neighbours).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(neighbours.locator("tbody img.thumb")).to_have_count(3)
    loaded(neighbours.locator("tbody img.thumb"))
    expect(neighbours.locator("tbody tr").first).to_contain_text("chelsea.png")

    expect(embedding).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    points = live.client().get(f"/v1/jobs/{embedding.get_attribute('data-job')}/artifacts/points.json").json()
    plot = page.locator("#embedding-plot")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    first = points[0]
    plot.hover(position={"x": (8 + first["x"] * 344) * box["width"] / 360, "y": (8 + first["y"] * 344) * box["height"] / 360})
    tip = page.locator("#embedding-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(PHOTOS[first["image_index"]])
    loaded(tip.locator("img"))
    shot(page, "datasets")


def test_the_atlas_deconvnet_card_explains_the_top_patch_image_itself(explorer, live, dataset):
    from core import images, preprocessing
    from core.stores.models import ModelStore

    page = explorer
    page.click("#tab-atlas")
    page.locator("#atlas-dataset").select_option(dataset["id"])
    form = page.locator("#layer-atlas-params")
    form.locator("input[name=layer]").fill(LAYER)
    form.locator("input[name=channels]").fill("[0, 1, 2, 3]")
    for name, value in (("steps", "8"), ("size", "32"), ("diversity", "1"), ("k", "2")):
        form.locator(f"input[name={name}]").fill(value)
    page.click("#layer-atlas-run")
    card = page.locator('#atlas-jobs article[aria-label="layer_atlas"]')
    assert in_viewport(page, card)
    expect(card).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    unit = page.locator("#unit-page")
    expect(unit.locator("h3")).to_contain_text("channel 0")
    loaded(unit.locator("tbody img.thumb"))

    atlas = live.client().get(f"/v1/jobs/{card.get_attribute('data-job')}/artifacts/atlas.json").json()
    top = atlas[0]["top"][0]
    button = page.locator("#unit-deconvnet")
    expect(button).to_contain_text(top["name"])
    button.click()
    deconv = page.locator("#unit-jobs article.job").first
    assert in_viewport(page, deconv)
    expect(deconv).to_have_attribute("aria-label", f"deconvnet · channel 0 · {top['name']} at "
                                                   f"[{top['position'][0]}, {top['position'][1]}]")
    expect(deconv).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(deconv.locator("#unit-deconvnet-image")).to_contain_text(f"explains {top['name']} (image {top['image_index']}")
    loaded(deconv.locator("img.picture, img.thumb"))

    job_id = deconv.get_attribute("data-job")
    job = live.client().get(f"/v1/jobs/{job_id}").json()
    assert job["params"]["channel"] == 0 and job["params"]["position"] == top["position"]
    sent = dataset["sent"][top["name"]]
    assert job["inputs"]["image"] == hashlib.sha256(sent).hexdigest()
    record = ModelStore.open(live.settings).get(MODEL)
    s = live.settings
    fitted = preprocessing.fit(images.decode(sent, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels), record,
                               max_pixels=s.max_resized_pixels)
    expected = preprocessing.to_tensor(fitted, record)
    given = np.load(io.BytesIO(live.client().get(f"/v1/jobs/{job_id}/artifacts/input.npy").content))
    np.testing.assert_allclose(given, expected, atol=1e-5)
    shot(page, "atlas")


def test_the_jobs_panel_says_what_each_job_was_and_reopens_a_gradcam(explorer, live):
    page = explorer
    use_sample(page, "rocket")
    stored = _image_id(live, "rocket")
    with live.client() as http:
        gradcam = http.post("/v1/jobs?wait=60", json={"kind": "gradcam", "model": MODEL, "image": {"id": stored},
                                                      "params": {"layer": LAYER, "evaluate": False}}).json()
    assert gradcam["status"] == "finished", gradcam
    page.click("#tab-jobs")
    row = page.locator(f'#jobs-list tr[data-job="{gradcam["id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("image rocket.jpg")  # the current image, by its name
    expect(row).to_contain_text(f"layer {LAYER}")
    expect(row.locator("td[data-label=Took]")).to_contain_text(" s")
    assert row.locator("time").get_attribute("datetime") == gradcam["created_at"]
    shot(page, "jobs")

    page.locator("#jobs-status").select_option("canceled")
    page.locator("#jobs-kind").select_option("embedding")
    expect(page.locator("#jobs-empty")).to_have_text("No canceled embedding jobs (the filters above show only "
                                                     "canceled embedding jobs).")
    page.locator("#jobs-status").select_option("")
    page.locator("#jobs-kind").select_option("gradcam")
    row.get_by_role("button", name="Open in Attributions").click()
    expect(page.locator("#panel-attributions")).to_be_visible()
    card = page.locator('#attr-results article[aria-label="gradcam"]')
    expect(card).to_have_attribute("data-job", gradcam["id"])
    expect(card).to_have_attribute("data-status", "finished")
    expect(card.locator(".blend canvas").first).to_be_visible()
    assert in_viewport(page, card)


def test_at_phone_width_no_panel_is_wider_than_the_window(explorer, live):
    page = explorer
    stored = _image_id(live, "coffee")
    with live.client() as http:  # at least one job with artifacts in the Jobs table
        http.post("/v1/jobs?wait=60", json={"kind": "saliency", "model": MODEL, "image": {"id": stored},
                                            "params": {"evaluate": False}})
    page.set_viewport_size({"width": 420, "height": 900})
    use_sample(page, "coffee")
    wide = {}
    for tab in page.locator('[role="tab"]').all():
        tab.click()
        name = tab.get_attribute("data-panel")
        panel = page.locator(f"#panel-{name}")
        expect(panel).to_be_visible()
        page.wait_for_load_state("networkidle")
        if name == "jobs":
            expect(page.locator("#jobs-list tbody tr").first).to_be_visible()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        widest = panel.evaluate("""p => [p, ...p.querySelectorAll('*')].filter(e => e.offsetParent)
            .map(e => [e.getBoundingClientRect().right, `${e.tagName}#${e.id}.${e.className}`])
            .reduce((a, b) => (b[0] > a[0] ? b : a))""")
        if width > 420 or widest[0] > 420.5:
            wide[name] = (width, *widest)
    assert not wide, ("panels wider than the 420 px window (page scroll width, the rightmost element's right edge "
                      f"and name): {wide}")


def test_layers_say_how_tiles_are_scaled_and_models_their_dates(explorer, live):
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-layers")
    page.fill("#layer-filter", LAYER)
    page.click(f'#layer-list tr[data-layer="{LAYER}"]')
    expect(page.locator("#layer-list tr[data-layer] abbr")).to_have_attribute("title", "Clip(0, 6) = ReLU6: a ReLU capped at 6")
    legend = page.locator("#layer-legend")
    expect(legend).to_contain_text("each channel scaled to its own max")
    expect(legend).to_contain_text("dead: grey, dashed")
    page.locator("#layer-scale").select_option("layer")
    expect(legend).to_contain_text("one scale for every channel of the layer")
    stats = live.client().post(f"/v1/models/{MODEL}/activations", json={
        "image": {"id": _image_id(live, "chelsea")},
        "layer": LAYER, "format": "json"}).json()["stats"]
    top = max(stats["max"])  # the layer's highest value, as the page writes numbers (ReLU6: 6)
    expect(legend).to_contain_text(str(int(top)) if top == int(top) else f"{top:.3f}")
    page.click("#tab-models")
    expect(page.locator(f'#models-list tr[data-model="{MODEL}"] td[data-label=Uploaded]')).to_have_text("built in")
