"""The explorer (`/ui/`) in a real browser, against the real service, a real worker and the real Redis.

Each panel is driven the way a person would (clicks, typing, files), and what it shows is checked
against the API's own answers (fetched here with httpx): pictures really render (natural width > 0),
progress advances, previews arrive, cancel works, refusals show the service's message. The `page`
fixture fails a test on any console error or failed request the test did not provoke. Screenshots of
every panel go to docs/ui/ (shown in the README).
"""

from __future__ import annotations

import re
import zipfile

import pytest
from playwright.sync_api import expect

from core.kinds.registry import KINDS
from core.methods import Attribution, Made
from tests.browser.conftest import MODEL, shot
from tests.onnx_builders import ClassicNet, export, seeded

JOB_TIMEOUT_MS = 180_000
ROAD_RANDOM_MAPS = 3  # the map's random control in the ROAD test: few, for time, more than one for a spread


def use_sample(page, name: str = "chelsea") -> None:
    """Open the Image panel and choose a bundled sample photo; wait for its predictions."""
    page.click("#tab-image")
    page.click(f'[data-sample="{name}"]')
    expect(page.locator("#predictions .bar").first).to_be_visible(timeout=30_000)


def natural_width(page, selector: str) -> int:
    return page.locator(selector).first.evaluate("img => img.naturalWidth")


def kinds_returning(result: type) -> list[str]:
    """The registry's kinds whose method returns `result` (Attribution: the maps; Made: the made images), in order."""
    return [name for name, kind in KINDS.items() if kind.returns is result]


def test_models_panel_lists_details_uploads_refuses_and_deletes(explorer, live, tmp_path):
    page = explorer
    page.click("#tab-models")
    row = page.locator(f'#models-list tr[data-model="{MODEL}"]')
    expect(row).to_be_visible()
    expect(page.locator("#model-details")).to_contain_text("224")  # input size in the details
    expect(page.locator("#model-details")).to_contain_text("1000")  # classes

    # A file that is not ONNX: refused, and the service's reason is shown.
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a model")
    page.expect_failures("/v1/models", 422)
    page.set_input_files("#model-upload-form input[name=file]", str(bad))
    page.click("#model-upload")
    error = page.locator("#model-upload-form .error")
    expect(error).to_be_visible(timeout=60_000)
    refusal = live.client().post("/v1/models", files={"file": ("broken.onnx", b"this is not a model")}).json()["error"]
    expect(error).to_contain_text(refusal["message"])

    # A small classifier with labels and preprocessing: kept, listed, chosen, then deleted.
    good = tmp_path / "tiny.onnx"
    good.write_bytes(export(seeded(ClassicNet(classes=4), size=64), opset=13, size=64))
    labels = tmp_path / "labels.txt"
    labels.write_text("apple\nbanana\ncherry\ndate\n")
    page.set_input_files("#model-upload-form input[name=file]", str(good))
    page.fill("#model-upload-form input[name=name]", "Tiny from the browser")
    page.set_input_files("#model-upload-form input[name=labels]", str(labels))
    page.fill("#model-upload-form textarea[name=preprocess]", '{"resize": 72, "crop": 64}')
    page.click("#model-upload")
    expect(page.locator("#model-upload-form .notice[aria-live]")).to_contain_text("kept as", timeout=120_000)
    uploaded = page.locator("#models-list tr", has_text="Tiny from the browser")
    expect(uploaded).to_be_visible()
    model_id = uploaded.get_attribute("data-model")
    expect(page.locator("#model-details")).to_contain_text("apple")
    expect(page.locator("#model-select")).to_have_value(model_id)
    shot(page, "models")

    page.once("dialog", lambda dialog: dialog.accept())
    uploaded.get_by_role("button", name=re.compile("delete", re.I)).click()
    expect(page.locator(f'#models-list tr[data-model="{model_id}"]')).to_have_count(0, timeout=30_000)
    assert live.client().get(f"/v1/models/{model_id}").status_code == 404


def test_image_panel_samples_files_and_predictions(explorer, live, tmp_path):
    page = explorer
    use_sample(page, "chelsea")
    assert natural_width(page, "#image-original") == 451
    expected = live.client().post(f"/v1/models/{MODEL}/predict", json={
        "image": {"id": _image_id(live, "chelsea")}, "top_k": 5}).json()["predictions"]
    bars = page.locator("#predictions .bar")
    expect(bars).to_have_count(5)
    assert [int(i) for i in bars.evaluate_all("bs => bs.map(b => b.dataset.index)")] == [p["index"] for p in expected]
    expect(bars.first).to_contain_text(expected[0]["label"])
    shot(page, "image")

    # A file of one's own, through the file picker; top k changes the number of bars.
    from tests.conftest import encode, sample

    path = tmp_path / "coffee.png"
    path.write_bytes(encode(sample("coffee")))
    page.set_input_files("#image-file", str(path))
    expect(page.locator("#current-image")).to_contain_text("coffee.png")
    page.fill("#top-k", "3")
    page.click("#predict")
    expect(bars).to_have_count(3)
    expect(bars.first).to_contain_text("espresso")

    # Dropped onto the drop zone, as from a file manager.
    transfer = page.evaluate_handle("""async () => {
        const blob = await (await fetch("samples/rocket.jpg")).blob();
        const data = new DataTransfer();
        data.items.add(new File([blob], "dropped-rocket.jpg", { type: "image/jpeg" }));
        return data;
    }""")
    page.dispatch_event("#image-drop", "drop", {"dataTransfer": transfer})
    expect(page.locator("#current-image")).to_contain_text("dropped-rocket.jpg")
    expect(page.locator("#image-original")).to_have_attribute("alt", "dropped-rocket.jpg")
    assert natural_width(page, "#image-original") == 480


def _image_id(live, name: str) -> str:
    """The id the service gives the explorer's bundled sample photo (ids are content hashes)."""
    with live.client() as http:
        photo = http.get(f"/ui/samples/{name}.jpg").content
        return http.post("/v1/images", files={"file": (f"{name}.jpg", photo, "image/jpeg")}).json()["id"]


def test_layers_panel_grid_channel_and_receptive_field(explorer, live):
    page = explorer
    use_sample(page, "chelsea")
    layer = "_blocks.5._relu1"
    info = next(entry for entry in live.client().get(f"/v1/models/{MODEL}").json()["layers"] if entry["name"] == layer)
    stats = live.client().post(f"/v1/models/{MODEL}/activations", json={
        "image": {"id": _image_id(live, "chelsea")}, "layer": layer, "format": "json"}).json()["stats"]

    page.click("#tab-layers")
    page.fill("#layer-filter", layer)
    page.click(f'#layer-list tr[data-layer="{layer}"]')
    channels = info["shape"][0]
    expect(page.locator("#channel-grid button[data-channel]")).to_have_count(min(channels, 256), timeout=30_000)
    dead = page.locator("#channel-grid button.dead").evaluate_all("bs => bs.map(b => b.dataset.channel)")
    shown_dead = {int(c) for c in dead}
    assert shown_dead == {c for c in stats["dead_channels"] if c < 256}

    page.click('#channel-grid button[data-channel="7"]')
    view = page.locator("#channel-stats")
    expect(view).to_contain_text(f"{stats['max'][7]:.4f}")
    expect(view).to_contain_text(f"{stats['mean'][7]:.4f}")

    # A click on the enlarged map picks a unit; its receptive field is the layer's, at that unit.
    stack = page.locator("#channel-stack")
    box = stack.bounding_box()
    _, rows, cols = info["shape"]
    y, x = 4, 6
    stack.click(position={"x": (x + 0.5) * box["width"] / cols, "y": (y + 0.5) * box["height"] / rows})
    rf = info["receptive_field"]
    x0, y0 = rf["start"] + x * rf["stride"], rf["start"] + y * rf["stride"]
    expect(page.locator("#unit-info")).to_contain_text(
        f"unit at (row {y}, column {x})")
    expect(page.locator("#unit-info")).to_contain_text(f"x {x0}…{x0 + rf['size'] - 1}, y {y0}…{y0 + rf['size'] - 1}")
    shot(page, "layers")

    # A convolution's filters, as the API's tile grid.
    page.fill("#layer-filter", "_bn0")
    page.click('#layer-list tr[data-layer="_bn0"]')
    page.click("#show-filters")
    expect(page.locator("#filters-image")).to_be_visible()
    assert natural_width(page, "#filters-image") > 0


def test_occlusion_panel_heatmap_and_errors(explorer, live):
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-occlusion")
    page.fill("#occ-patch", "56")
    page.fill("#occ-stride", "28")
    page.fill("#occ-target", "tabby")
    page.click("#occ-run")
    expect(page.locator("#occlusion-result canvas").first).to_be_visible(timeout=60_000)
    answer = live.client().post(f"/v1/models/{MODEL}/occlusion", json={
        "image": {"id": _image_id(live, "chelsea")}, "patch": 56, "stride": 28, "target": "tabby", "format": "json"}).json()
    expect(page.locator("#occlusion-result")).to_contain_text(f"{answer['baseline_probability']:.4f}")
    expect(page.locator("#occlusion-result")).to_contain_text(f"class {answer['target']}")
    shot(page, "occlusion")

    # An unknown class: the service's message is shown, nothing else breaks.
    page.expect_failures("/occlusion", 422)
    page.fill("#occ-target", "no such class")
    page.click("#occ-run")
    expect(page.locator("#panel-occlusion .error")).to_contain_text("no such class")


def test_attributions_side_by_side_with_progress_and_blend(explorer, live):
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-attributions")
    # The methods offered are the API's attribution kinds, told apart in its schema (no list in the page).
    boxes = page.locator("#attr-kinds input[name=kind]")
    expect(boxes).to_have_count(len(kinds_returning(Attribution)))
    assert boxes.evaluate_all("all => all.map((b) => b.value)") == kinds_returning(Attribution)
    assert boxes.evaluate_all("all => all.filter((b) => b.checked).map((b) => b.value)") == [
        "saliency", "gradcam", "integrated_gradients"]
    for kind in ("saliency", "gradcam", "integrated_gradients", "smoothgrad"):
        page.set_checked(f"#attr-kind-{kind}", kind != "integrated_gradients")
    page.locator("#attr-kinds .kind", has=page.locator("#attr-kind-smoothgrad")).locator("summary").click()
    page.locator("#attr-kinds .kind", has=page.locator("#attr-kind-smoothgrad")).locator("input[name=samples]").fill("12")
    page.click("#attr-run")
    cards = page.locator("#attr-results article.job")
    expect(cards).to_have_count(3)
    expect(page.locator("#attr-results article[data-status=finished]")).to_have_count(3, timeout=JOB_TIMEOUT_MS)
    for card in cards.all():
        bar = card.locator("progress")
        assert bar.evaluate("p => p.value") == bar.evaluate("p => p.max") > 0
        expect(card.locator(".blend canvas")).to_have_count(2)
    smooth = page.locator('#attr-results article[aria-label="smoothgrad"]')
    job = live.client().get(f"/v1/jobs/{smooth.get_attribute('data-job')}").json()
    assert job["params"]["samples"] == 12 and job["progress"]["total"] > 1

    heat = page.locator("#attr-results .layer-heat").first
    page.locator("#attr-opacity").fill("0.2")
    assert heat.evaluate("c => c.style.opacity") == "0.2"
    page.locator("#attr-opacity").fill("0.65")
    for card in cards.all():  # the faithfulness scores next to each map are the job's own metrics: ROAD first
        metrics = live.client().get(f"/v1/jobs/{card.get_attribute('data-job')}").json()["result"]["metrics"]
        expect(card.locator(".faithfulness .road")).to_contain_text(f"ROAD score {signed(metrics['road_score'])}")
        expect(card.locator(".faithfulness .road")).to_contain_text(verdict(metrics))
        expect(card.locator(".faithfulness .deletion")).to_contain_text(
            f"Deletion AUC {metrics['deletion_auc']:.3f} (pixels blurred")
        expect(card.locator(".faithfulness .deletion")).to_contain_text(f"insertion AUC {metrics['insertion_auc']:.3f}")
    shot(page, "attributions")

    # The same methods compared: ranked by ROAD, with the random control and the panel of maps.
    page.set_checked("#attr-kind-smoothgrad", False)
    page.click("#attr-compare")
    compared = page.locator('#attr-results article.job')
    expect(compared.locator("h3")).to_have_text("compare: ranked by ROAD")
    expect(compared).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(compared.locator("tbody tr")).to_have_count(2)
    headers = compared.locator("thead th").all_inner_texts()
    assert headers[:4] == ["method", "ROAD score (higher is more faithful)", "random maps, same grain (mean ± sd)",
                           "beats random"], headers
    assert headers.index("deletion AUC (pixels blurred; lower is better)") > 3
    ranking = live.client().get(f"/v1/jobs/{compared.get_attribute('data-job')}/artifacts/ranking.json").json()
    assert [r["road_score"] for r in ranking] == sorted((r["road_score"] for r in ranking), reverse=True)
    rows = [row.inner_text().split("\t") for row in compared.locator("tbody tr").all()]
    assert [row[0] for row in rows] == [r["method"] for r in ranking]
    for row, expected in zip(rows, ranking, strict=True):
        assert row[1].strip() == signed(expected["road_score"])
        assert row[2].strip() == f"{signed(expected['road_random_mean'])} ± {expected['road_random_sd']:.3f}"
        assert row[3].strip().startswith("yes" if expected["beats_random"] else "no")
    assert compared.locator("img.picture").evaluate("i => i.naturalWidth") > 0


CAMS = ["gradcam", "gradcam_plus_plus", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam"]


def test_the_cam_family_side_by_side(explorer, live):
    """Every CAM on one photo, each with its scores; Eigen-CAM's row says it has no target."""
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-attributions")
    expect(page.locator("#attr-no-target-eigencam")).to_contain_text("no target")
    expect(page.locator("#attr-no-target-gradcam")).to_have_count(0)
    for kind in kinds_returning(Attribution):
        page.set_checked(f"#attr-kind-{kind}", kind in CAMS)
    for kind in CAMS:  # short scores: the maps are the point here
        form = page.locator("#attr-kinds .kind", has=page.locator(f"#attr-kind-{kind}"))
        form.locator("summary").click()
        form.locator("input[name=road_fractions]").fill("[0.25, 0.5, 0.75]")
        form.locator("input[name=road_random_maps]").fill("2")
        form.locator("input[name=evaluation_steps]").fill("4")
        form.locator("summary").click()
    page.click("#attr-run")
    cards = page.locator("#attr-results article.job")
    expect(cards).to_have_count(len(CAMS))
    expect(page.locator("#attr-results article[data-status=finished]")).to_have_count(len(CAMS),
                                                                                      timeout=2 * JOB_TIMEOUT_MS)
    for kind in CAMS:
        card = page.locator(f'#attr-results article[aria-label="{kind}"]')
        expect(card.locator(".blend canvas")).to_have_count(2)
        expect(card.locator(".faithfulness .road")).to_contain_text("ROAD score")
    shot(page, "cams")


def signed(value: float) -> str:
    """A score as the explorer writes it: sign always shown, a true minus sign, three decimals."""
    return f"{value:+.3f}".replace("-", "\u2212")


def verdict(metrics: dict) -> str:
    """How the explorer words a map's ROAD score against its random control."""
    if metrics["beats_random"]:
        return "more faithful than random maps of the same grain"
    if metrics["road_score"] < metrics["road_random_mean"] - 2 * metrics["road_random_sd"]:
        return "less faithful than random maps of the same grain"
    return "not distinguishable from random maps of the same grain"


# Records, for each attribution card, the job status the card showed when its map first appeared (a
# MutationObserver sees the map the moment it is inserted, whatever the test is waiting on meanwhile).
WATCH_MAPS = """() => {
    window.mapSeenAt = {};
    new MutationObserver(() => {
        for (const card of document.querySelectorAll("#attr-results article.job")) {
            const kind = card.getAttribute("aria-label");
            if (kind in window.mapSeenAt || !card.querySelector(".blend canvas")) continue;
            window.mapSeenAt[kind] = card.dataset.status;
        }
    }).observe(document.getElementById("attr-results"), { subtree: true, childList: true, attributes: true });
}"""


def test_attribution_map_shown_while_scored_then_road(explorer, live):
    """Each map appears as soon as the worker has made it (its `artifact` event), while the job still scores it;
    when the job ends, ROAD leads: the score against random maps of the same grain, then its two curves."""
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-attributions")
    for kind in ("saliency", "gradcam", "integrated_gradients"):
        page.set_checked(f"#attr-kind-{kind}", kind != "integrated_gradients")
    fractions = [0.2, 0.4, 0.6, 0.8]
    for kind in ("saliency", "gradcam"):  # few points on each curve: the scores take a few seconds
        form = page.locator("#attr-kinds .kind", has=page.locator(f"#attr-kind-{kind}"))
        form.locator("summary").click()
        form.locator("input[name=road_fractions]").fill(str(fractions))
        form.locator("input[name=road_random_maps]").fill(str(ROAD_RANDOM_MAPS))
        form.locator("input[name=evaluation_steps]").fill("4")
    page.evaluate(WATCH_MAPS)
    page.click("#attr-run")
    cards = page.locator("#attr-results article.job")
    expect(cards).to_have_count(2)
    expect(page.locator("#attr-results article[data-status=finished]")).to_have_count(2, timeout=JOB_TIMEOUT_MS)

    seen = page.evaluate("() => window.mapSeenAt")
    for card in cards.all():
        kind = card.get_attribute("aria-label")
        job_id = card.get_attribute("data-job")
        job = live.client().get(f"/v1/jobs/{job_id}").json()
        assert job["params"]["road_random_maps"] == ROAD_RANDOM_MAPS and job["params"]["road_fractions"] == fractions
        # The map came from the `artifact` event and was on screen while the job was still scoring it.
        assert card.get_attribute("data-map") == "artifact", kind
        assert seen[kind] == "started" == card.get_attribute("data-map-status"), (kind, seen)
        expect(card.locator(".blend canvas")).to_have_count(2)
        expect(card.locator(".scoring")).to_have_count(0)

        metrics = job["result"]["metrics"]
        evaluation = live.client().get(f"/v1/jobs/{job_id}/artifacts/evaluation.json").json()
        grain = {"saliency": [224, 224], "gradcam": [7, 7]}[kind]
        assert evaluation["road"]["random"]["grain"] == grain
        sentence = card.locator(".faithfulness .road")
        expect(sentence).to_contain_text(f"ROAD score {signed(metrics['road_score'])} — {verdict(metrics)} "
                                         f"({ {'saliency': 'pixel level', 'gradcam': '7×7'}[kind]}): random "
                                         f"{signed(metrics['road_random_mean'])} ± {metrics['road_random_sd']:.3f} "
                                         f"({ROAD_RANDOM_MAPS} maps)")
        assert "fills each removed pixel in from its neighbours" in sentence.get_attribute("title")
        expect(card.locator(".faithfulness details.explain summary")).to_have_text("What does ROAD measure?")

        # The two ROAD curves, one point per fraction, on labelled axes with a legend.
        chart = card.locator("figure.road-chart")
        expect(chart.locator("svg polyline")).to_have_count(2)
        for series in ("MoRF: most relevant removed first", "LeRF: least relevant removed first"):
            expect(chart.locator(f'g[data-series="{series}"] circle')).to_have_count(len(fractions))
            expect(chart.locator(".legend")).to_contain_text(series)
        morf_first = chart.locator('g[data-series^="MoRF"] circle title').first.text_content()
        assert morf_first == f"MoRF: most relevant removed first: 20% → {round(evaluation['road']['morf'][0], 4):g}"
        expect(chart.locator("svg text.axis-label")).to_have_text(["pixels removed (filled in from neighbours)", "probability"])
        deletion = card.locator(".faithfulness .deletion")
        expect(deletion).to_contain_text("(pixels blurred; lower is better)")
        expect(deletion).to_contain_text("(pixels restored into a blurred copy; higher is better)")


def test_making_panel_previews_final_image_and_cancel(explorer, live):
    page = explorer
    use_sample(page, "chelsea")
    page.click("#tab-making")
    options = page.locator("#make-kind option")
    expect(options).to_have_count(len(kinds_returning(Made)))  # the API's image-making kinds, from its schema
    assert options.evaluate_all("all => all.map((o) => o.value)") == kinds_returning(Made)
    page.select_option("#make-kind", "feature_vis")
    params = page.locator("#make-params")
    expect(params.locator("input[name=steps]")).to_have_value("128")  # the API's default, from its schema
    params.locator("input[name=layer]").fill("_blocks.5._relu1")
    params.locator("input[name=channel]").fill("7")
    params.locator("input[name=steps]").fill("40")
    params.locator("input[name=size]").fill("96")
    params.locator("input[name=preview_every]").fill("8")
    page.click("#make-run")
    card = page.locator("#make-results article.job").first
    expect(card.locator("img.preview")).to_have_attribute("src", re.compile("^data:image/png;base64,"), timeout=JOB_TIMEOUT_MS)
    expect(card).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(card.locator("img.made")).to_be_visible()
    assert natural_width(page, "#make-results article.job img.made") == 96
    expect(card.locator('dd[data-metric="objective"]')).to_be_visible()
    shot(page, "making")

    # A long class model: wait until it runs, then cancel it from its card.
    page.select_option("#make-kind", "class_model")
    expect(params.locator("input[name=target]")).to_have_value("Egyptian cat")  # the image's top class, to start from
    params.locator("input[name=target]").fill("goldfish")
    params.locator("input[name=steps]").fill("2000")
    params.locator("input[name=size]").fill("64")
    page.click("#make-run")
    long_job = page.locator("#make-results article.job").first
    expect(long_job).to_have_attribute("data-status", "started", timeout=JOB_TIMEOUT_MS)
    long_job.get_by_role("button", name="Cancel").click()
    expect(long_job).to_have_attribute("data-status", "canceled", timeout=60_000)
    assert live.client().get(f"/v1/jobs/{long_job.get_attribute('data-job')}").json()["status"] == "canceled"


def test_datasets_panel_upload_top_embedding_neighbours_stats(explorer, live, tmp_path):
    from tests.conftest import encode, sample

    page = explorer
    use_sample(page, "chelsea")
    archive = tmp_path / "photos.zip"  # deflated members, in a folder, and one that is not a picture
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name in ("chelsea", "coffee", "astronaut", "rocket", "camera"):
            bundle.writestr(f"photos/{name}.png", encode(sample(name)))
        bundle.writestr("photos/notes.txt", "not a picture")
    page.click("#tab-datasets")
    page.set_input_files("#dataset-file", str(archive))
    page.click("#dataset-upload")
    expect(page.locator("#dataset-uploaded")).to_contain_text("5 images kept", timeout=60_000)
    expect(page.locator("#dataset-uploaded")).to_contain_text("notes.txt")

    actions = page.locator("#dataset-actions")
    top = actions.locator(".card", has=page.locator("#ds-top_activations"))
    top.locator("input[name=layer]").fill("_blocks.5._relu1")
    top.locator("input[name=channel]").fill("7")
    top.locator("input[name=k]").fill("4")
    page.click("#ds-top_activations")
    actions.locator(".card", has=page.locator("#ds-embedding")).locator("select[name=method]").select_option("pca")
    page.click("#ds-embedding")
    actions.locator(".card", has=page.locator("#ds-neighbors")).locator("input[name=k]").fill("3")
    page.click("#ds-neighbors")
    page.click("#ds-unit_stats")
    results = page.locator("#dataset-results article.job")
    expect(page.locator("#dataset-results article[data-status=finished]")).to_have_count(4, timeout=JOB_TIMEOUT_MS)
    for card in results.all():
        for img in card.locator("img.picture").all():
            assert img.evaluate("i => i.naturalWidth") > 0
    expect(page.locator('#dataset-results article[aria-label="top_activations"] tbody tr')).to_have_count(4)
    expect(page.locator('#dataset-results article[aria-label="neighbors"] tbody tr')).to_have_count(3)
    expect(page.locator('#dataset-results article[aria-label="neighbors"] tbody tr').first).to_contain_text("chelsea.png")

    # Hovering a point of the embedding shows which image it is, and the image itself.
    card = page.locator('#dataset-results article[aria-label="embedding"]')
    points = live.client().get(f"/v1/jobs/{card.get_attribute('data-job')}/artifacts/points.json").json()
    plot = page.locator("#embedding-plot")
    box = plot.bounding_box()
    first = points[0]
    plot.hover(position={"x": (8 + first["x"] * 344) * box["width"] / 360, "y": (8 + first["y"] * 344) * box["height"] / 360})
    tip = page.locator("#embedding-tip")
    expect(tip).to_be_visible()
    expect(tip.locator("img")).to_have_count(1)
    expect(tip.locator("img")).not_to_have_js_property("naturalWidth", 0)  # fetched from the API as it is hovered
    shot(page, "datasets")


def test_jobs_panel_lists_jobs_with_artifacts(explorer, live):
    page = explorer
    image = _image_id(live, "rocket")
    params = {"evaluate": False} if _has_evaluate(live) else {}
    submitted = live.client().post("/v1/jobs?wait=60", json={"kind": "saliency", "model": MODEL, "image": {"id": image},
                                                             "params": params}).json()
    assert submitted["status"] == "finished"
    page.click("#tab-jobs")
    row = page.locator(f'#jobs-list tr[data-job="{submitted["id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("finished")
    usage = live.client().get("/v1/usage").json()  # what the key holds, as the panel says it
    expect(page.locator("#jobs-usage")).to_contain_text(
        f"jobs waiting {usage['queued_jobs']['held']} of {usage['queued_jobs']['limit']}")
    expect(page.locator("#jobs-usage")).to_contain_text(f"models {usage['models']['held']} of {usage['models']['limit']}")
    with page.expect_download() as download:
        row.locator('a[data-artifact="heatmap.png"]').click()
    assert download.value.suggested_filename == "heatmap.png"
    shot(page, "jobs")


def _has_evaluate(live) -> bool:
    schema = live.client().get("/openapi.json").json()["components"]["schemas"]["SaliencyParams"]
    return "evaluate" in schema["properties"]


def test_keyboard_tabs_labels_and_narrow_window(explorer):
    page = explorer
    page.click("#tab-models")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#tab-image")).to_be_focused()
    expect(page.locator("#panel-image")).to_be_visible()
    page.keyboard.press("End")
    expect(page.locator("#panel-jobs")).to_be_visible()
    # Every form control has a label (a <label for>, a wrapping label, or aria-label).
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => el.type !== 'hidden' && !el.labels?.length && !el.getAttribute('aria-label'))
        .map(el => el.outerHTML.slice(0, 80))""")
    assert unlabelled == []
    page.set_viewport_size({"width": 420, "height": 800})
    page.click("#tab-image")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 420
    shot(page, "narrow")


def test_atlas_panel_layer_page_unit_page_and_activation_atlas(explorer, live, tmp_path):
    from tests.conftest import encode, sample

    page = explorer
    use_sample(page, "chelsea")
    archive = tmp_path / "atlas.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name in ("chelsea", "coffee", "astronaut", "rocket", "camera"):
            bundle.writestr(f"{name}.png", encode(sample(name)))
    page.click("#tab-datasets")
    page.set_input_files("#dataset-file", str(archive))
    page.click("#dataset-upload")
    expect(page.locator("#dataset-uploaded")).to_contain_text("5 images kept", timeout=60_000)

    page.click("#tab-atlas")
    page.locator("#atlas-dataset").select_option(index=1)
    form = page.locator("#layer-atlas-params")
    form.locator("input[name=layer]").fill("_blocks.5._relu1")
    form.locator("input[name=channels]").fill("[0, 1, 2, 3, 4, 5, 6, 7, 8]")
    for name, value in (("steps", "16"), ("size", "32"), ("diversity", "2"), ("k", "3")):
        form.locator(f"input[name={name}]").fill(value)
    page.click("#layer-atlas-run")
    card = page.locator('#atlas-jobs article[aria-label="layer_atlas"]')
    expect(card).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    grid = page.locator("#layer-atlas-grid")
    expect(grid).to_be_visible()
    assert grid.evaluate("i => i.naturalWidth") == 3 * 34 + 2  # 9 icons of 32 px on a 3 × 3 grid

    # A click on the fifth icon (row 1, column 1) opens channel 4's unit page.
    box = grid.bounding_box()
    grid.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    unit = page.locator("#unit-page")
    expect(unit.locator("h3")).to_contain_text("channel 4")
    expect(unit.locator("img.unit-image")).to_have_count(2)
    for img in unit.locator("img.unit-image").all():
        expect(img).to_have_js_property("naturalWidth", 32)
    expect(unit.locator("#unit-top")).to_be_visible()
    expect(unit.locator("#unit-stats")).to_contain_text("sparsity")
    atlas = live.client().get(f"/v1/jobs/{card.get_attribute('data-job')}/artifacts/atlas.json").json()
    entry = next(e for e in atlas if e["channel"] == 4)
    expect(unit.locator("tbody tr")).to_have_count(len(entry["top"]))
    expect(unit.locator("tbody tr").first).to_contain_text(entry["top"][0]["name"])

    # The top patch projected back to pixels by deconvnet, on the image it came from.
    page.click("#unit-deconvnet")
    deconv = page.locator("#unit-jobs article.job").first
    expect(deconv).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    job = live.client().get(f"/v1/jobs/{deconv.get_attribute('data-job')}").json()
    assert job["params"]["channel"] == 4 and job["params"]["position"] == entry["top"][0]["position"]
    shot(page, "atlas")

    form = page.locator("#activation-atlas-params")
    form.locator("input[name=layer]").fill("_blocks.5._relu1")
    for name, value in (("grid", "3"), ("positions_per_image", "8"), ("steps", "16"), ("size", "32")):
        form.locator(f"input[name={name}]").fill(value)
    form.locator("select[name=method]").select_option("tsne")
    page.click("#activation-atlas-run")
    activation = page.locator('#atlas-jobs article[aria-label="activation_atlas"]')
    expect(activation).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    picture = page.locator("#activation-atlas")
    expect(picture).to_have_js_property("naturalWidth", 3 * 33 + 1)
    before = picture.bounding_box()["width"]
    page.locator("#atlas-zoom").fill("2")
    assert picture.bounding_box()["width"] == pytest.approx(2 * before, rel=0.02)
    cells = live.client().get(f"/v1/jobs/{activation.get_attribute('data-job')}/artifacts/cells.json").json()
    cell = cells[0]
    scale = picture.bounding_box()["width"] / (3 * 33 + 1)
    picture.hover(position={"x": (1 + cell["x"] * 33 + 16) * scale, "y": (1 + cell["y"] * 33 + 16) * scale})
    expect(page.locator("#atlas-tip")).to_contain_text(f"{cell['count']} activations")
    shot(page, "activation_atlas")
