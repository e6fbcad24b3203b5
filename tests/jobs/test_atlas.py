"""`layer_atlas` and `activation_atlas` as jobs: real workers, the real Redis, the built-in model.

Oracles: each channel's top patches and statistics are those the `top_activations` and `unit_stats` jobs
give for the same dataset; each icon's objective is its channel's mean activation measured here on the
artifact PNG with the torch model; an icon does not depend on the batch it was made in; the unit cache makes
only new channels, and keeps a cancelled atlas's finished ones; cells' top classes are the top-1 classes
`predict` gives the dataset's images.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import redis
from PIL import Image

from tests.conftest import encode, sample
from tests.jobs.conftest import MODEL, read_events, wait_for

LAYER = "_blocks.5._relu1"
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "camera", "coins"]
FAST = {"steps": 12, "size": 32}


@pytest.fixture(scope="module")
def dataset_id(jobs_client) -> str:
    files = [("files", (f"{name}.png", encode(_small(name)), "image/png")) for name in PHOTOS]
    answer = jobs_client.post("/v1/datasets", files=files)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _small(name: str) -> np.ndarray:
    image = Image.fromarray(sample(name)).convert("RGB")
    image.thumbnail((160, 160))
    return np.asarray(image)


def run(client, kind: str, params: dict, dataset: str | None = None, wait: float = 60) -> dict:
    body = {"kind": kind, "model": MODEL, "params": params, **({"dataset": dataset} if dataset else {})}
    answer = client.post(f"/v1/jobs?wait={wait}", json=body)
    assert answer.status_code in (200, 202), answer.text
    job = answer.json()
    return job if job["status"] in ("finished", "failed", "canceled") else wait_for(client, job["id"], timeout=240)


def artifact(client, job: dict, name: str):
    answer = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
    assert answer.status_code == 200, (name, answer.text)
    if name.endswith(".json"):
        return answer.json()
    return np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))


def channel_mean(network, layer: str, channel: int, pixels: np.ndarray) -> float:
    from workers.methods.mechanics import icons

    return float(icons.activations(network, layer, pixels[None])[0, channel].mean())


def test_layer_atlas_with_a_dataset_matches_top_activations_and_unit_stats(jobs_client, dataset_id, lite0):
    channels = [0, 3, 7, 11]
    job = run(jobs_client, "layer_atlas", {"layer": LAYER, "channels": channels, "k": 3, "seed": 5, **FAST},
              dataset_id)
    assert job["status"] == "finished", job["error"]
    assert job["progress"] == {"step": job["progress"]["total"], "total": job["progress"]["total"]}
    names = {a["name"] for a in job["result"]["artifacts"]}
    assert {"atlas.json", "atlas.png"} | {f"unit_{c}.png" for c in channels} | {f"top_{c}.png" for c in channels} <= names
    atlas = artifact(jobs_client, job, "atlas.json")
    assert [entry["channel"] for entry in atlas] == channels

    top = run(jobs_client, "top_activations", {"layer": LAYER, "k": 3}, dataset_id)
    by_channel = {}
    for entry in artifact(jobs_client, top, "top.json"):
        by_channel.setdefault(entry["channel"], []).append(entry)
    units = {u["channel"]: u for u in artifact(jobs_client, run(jobs_client, "unit_stats", {"layer": LAYER}, dataset_id),
                                               "units.json")}
    for entry in atlas:
        c = entry["channel"]
        assert [(t["image_index"], t["box"], t["position"]) for t in entry["top"]] == \
               [(t["image_index"], t["box"], t["position"]) for t in by_channel[c]]
        np.testing.assert_allclose([t["activation"] for t in entry["top"]], [t["activation"] for t in by_channel[c]],
                                   rtol=1e-5)
        assert entry["stats"]["dead"] == units[c]["dead"]
        assert entry["stats"]["mean"] == pytest.approx(units[c]["mean"], rel=1e-5)
        assert entry["stats"]["fraction_zero"] == pytest.approx(units[c]["fraction_zero"])
        icon = artifact(jobs_client, job, entry["images"][0])
        assert icon.shape == (32, 32, 3)
        assert entry["objective"] == pytest.approx(channel_mean(lite0, LAYER, c, icon), rel=1e-3, abs=1e-4)
        assert artifact(jobs_client, job, f"top_{c}.png").shape[0] > 0
    grid = artifact(jobs_client, job, "atlas.png")
    assert grid.shape == (2 * 34 + 2, 2 * 34 + 2, 3)  # 4 icons of 32 px, 2 px apart


def test_icons_do_not_depend_on_their_batch_and_the_cache_makes_only_new_channels(jobs_client, job_settings):
    params = {"layer": LAYER, "seed": 11, **FAST}
    one_by_one = run(jobs_client, "layer_atlas", {**params, "channels": [1, 2], "batch": 1})
    assert one_by_one["status"] == "finished" and one_by_one["result"]["metrics"]["made"] == 2
    more = run(jobs_client, "layer_atlas", {**params, "channels": [1, 2, 4, 5], "batch": 4})
    metrics = more["result"]["metrics"]
    assert (metrics["made"], metrics["from_cache"]) == (2, 2)
    for c in (1, 2):  # from the cache: the very same pixels
        assert np.array_equal(artifact(jobs_client, one_by_one, f"unit_{c}.png"), artifact(jobs_client, more, f"unit_{c}.png"))
    # Channels 4 and 5 were made in a batch of four; made alone (cache emptied) they come out the same, to rounding.
    client = redis.Redis.from_url(job_settings.redis_url)
    client.delete(*client.scan_iter(match=f"{job_settings.redis_prefix}units:*"))
    alone = run(jobs_client, "layer_atlas", {**params, "channels": [4, 5], "batch": 1})
    assert alone["result"]["metrics"]["made"] == 2
    for c in (4, 5):
        difference = np.abs(artifact(jobs_client, more, f"unit_{c}.png").astype(int)
                            - artifact(jobs_client, alone, f"unit_{c}.png").astype(int))
        assert difference.max() <= 3, c


def test_diversity_variants_differ_and_each_drives_its_channel(jobs_client):
    job = run(jobs_client, "layer_atlas", {"layer": LAYER, "channels": [7], "diversity": 3, "seed": 2, **FAST})
    entry = artifact(jobs_client, job, "atlas.json")[0]
    assert entry["images"] == ["unit_7.png", "unit_7_1.png", "unit_7_2.png"]
    variants = [artifact(jobs_client, job, name) for name in entry["images"]]
    assert all(not np.array_equal(a, b) for i, a in enumerate(variants) for b in variants[i + 1:])
    assert len(entry["objectives"]) == 3 and min(entry["objectives"]) > 0


def test_a_cancelled_atlas_keeps_its_finished_channels(jobs_client):
    params = {"layer": LAYER, "channels": list(range(20, 36)), "batch": 2, "seed": 3, "steps": 40, "size": 32}
    job = jobs_client.post("/v1/jobs", json={"kind": "layer_atlas", "model": MODEL, "params": params}).json()
    with jobs_client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: preview"):
                break
    jobs_client.delete(f"/v1/jobs/{job['id']}")
    ended = wait_for(jobs_client, job["id"])
    assert ended["status"] == "canceled"
    again = run(jobs_client, "layer_atlas", params, wait=60)
    assert again["status"] == "finished"
    made, cached = again["result"]["metrics"]["made"], again["result"]["metrics"]["from_cache"]
    assert made + cached == 16
    assert 2 <= cached < 16  # the batch that ended before the first preview, and not the ones it never reached


def test_atlas_previews_fill_in_and_progress_counts_channels(jobs_client):
    params = {"layer": LAYER, "channels": [40, 41, 42, 43], "batch": 2, "seed": 4, **FAST}
    job = jobs_client.post("/v1/jobs", json={"kind": "layer_atlas", "model": MODEL, "params": params}).json()
    assert job["progress"]["total"] in (0, 4)
    with jobs_client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        events = read_events(stream)
    previews = [e["data"] for e in events if e["event"] == "preview"]
    assert [p["step"] for p in previews] == [2, 4]
    steps = [e["data"]["step"] for e in events if e["event"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 4
    assert {e["data"]["total"] for e in events if e["event"] == "progress"} == {4}


@pytest.mark.parametrize(("params", "field"), [({"layer": "nope"}, "layer"), ({"layer": LAYER, "channels": [9999]}, "channels"),
                                               ({"layer": LAYER, "channels": [1, 1]}, "channels")])
def test_bad_atlas_params_are_422(jobs_client, params, field):
    answer = jobs_client.post("/v1/jobs", json={"kind": "layer_atlas", "model": MODEL, "params": params})
    assert answer.status_code == 422
    assert field in answer.json()["error"]["message"] or "channel" in answer.json()["error"]["message"]


def test_activation_atlas_needs_a_dataset(jobs_client):
    answer = jobs_client.post("/v1/jobs", json={"kind": "activation_atlas", "model": MODEL, "params": {"layer": LAYER}})
    assert answer.status_code == 422


def test_activation_atlas_cells_icons_and_classes(jobs_client, dataset_id):
    job = run(jobs_client, "activation_atlas", {"layer": LAYER, "grid": 3, "positions_per_image": 6, "method": "tsne",
                                                "steps": 24, "size": 32, "min_count": 1}, dataset_id)
    assert job["status"] == "finished", job["error"]
    cells = artifact(jobs_client, job, "cells.json")
    metrics = job["result"]["metrics"]
    assert metrics["vectors"] == 6 * len(PHOTOS) and metrics["cells"] == len(cells) > 1
    assert sum(cell["count"] for cell in cells) == metrics["vectors"]
    assert len({(cell["x"], cell["y"]) for cell in cells}) == len(cells)
    assert all(0 <= cell["x"] < 3 and 0 <= cell["y"] < 3 for cell in cells)
    assert job["progress"] == {"step": 1 + 1 + 9, "total": 1 + 1 + 9}  # one dataset batch, the map, 3 × 3 cells
    predicted = set()
    for name in PHOTOS:
        answer = jobs_client.post(f"/v1/models/{MODEL}/predict", files={"image": ("p.png", encode(_small(name)), "image/png")},
                                  data={"spec": json.dumps({"top_k": 1})})
        predicted.add(answer.json()["predictions"][0]["index"])
    assert {cell["top_class"] for cell in cells} <= predicted
    for cell in cells:
        assert artifact(jobs_client, job, cell["image"]).shape == (32, 32, 3)
    assert artifact(jobs_client, job, "atlas.png").shape == (3 * 33 + 1, 3 * 33 + 1, 3)
