"""Image-making kinds as jobs, end to end: real app, real worker process, real Redis."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from core import images, preprocessing
from tests.conftest import encode, sample
from tests.jobs.conftest import MODEL, wait_for


def test_class_model_job_reads_no_image_and_returns_a_png(jobs_client, builtin, torch_lite0):
    response = jobs_client.post("/v1/jobs?wait=60", json={
        "kind": "class_model", "model": MODEL, "params": {"target": "goldfish", "size": 64, "steps": 24,
                                                          "preview_every": 8}})
    assert response.status_code in (200, 202), response.text
    job = wait_for(jobs_client, response.json()["id"], timeout=120)
    assert job["status"] == "finished", job
    assert job["params"]["parameterisation"] == "fourier" and job["params"]["lr"] == 0.05  # defaults filled in
    names = {a["name"]: a["media_type"] for a in job["result"]["artifacts"]}
    assert names == {"image.png": "image/png"}  # no image read, so no input.npy
    png = jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/image.png")
    pixels = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    assert pixels.shape == (64, 64, 3)
    # target_probability is the goldfish probability of the 8-bit image a client decodes, here by the
    # torch model on those pixels normalised as the model record says
    pre = builtin.preprocess
    x = (pixels * pre.scale - np.array(pre.mean)) / np.array(pre.std)
    with torch.no_grad():
        logits = torch_lite0(torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)))
    metrics = job["result"]["metrics"]
    assert metrics["target"] == 1 and metrics["target_label"] == "goldfish"
    assert metrics["target_probability"] == pytest.approx(float(logits.softmax(1)[0, 1]), abs=2e-5)
    events = jobs_client.get(f"/v1/jobs/{job['id']}/events").text
    previews = [json.loads(line[len("data: "):]) for block in events.split("\n\n") if "event: preview" in block
                for line in block.splitlines() if line.startswith("data: ")]
    assert [p["step"] for p in previews] == [8, 16, 24]
    shown = [np.asarray(Image.open(io.BytesIO(base64.b64decode(p["png_base64"]))).convert("RGB")) for p in previews]
    np.testing.assert_array_equal(shown[-1], pixels)  # the last preview is the result; 64 px needs no shrinking
    assert all(np.abs(a.astype(int) - b).mean() > 1 for a, b in zip(shown, shown[1:]))  # each shows a later step


def test_style_transfer_job_takes_two_images(jobs_client, builtin):
    spec = {"kind": "style_transfer", "model": MODEL, "params": {"size": 64, "steps": 10}}
    response = jobs_client.post("/v1/jobs?wait=60", files={
        "image": ("content.png", encode(sample("chelsea")), "image/png"),
        "style_image": ("style.png", encode(sample("coffee")), "image/png")}, data={"spec": json.dumps(spec)})
    assert response.status_code in (200, 202), response.text
    job = wait_for(jobs_client, response.json()["id"], timeout=120)
    assert job["status"] == "finished", job
    assert {"image.png", "input.npy"} <= {a["name"] for a in job["result"]["artifacts"]}
    metrics = job["result"]["metrics"]
    assert metrics["style_loss"] < metrics["content_image_style_loss"]
    x = np.load(io.BytesIO(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/input.npy").content))
    content = images.decode(encode(sample("chelsea")), max_bytes=10**8, max_pixels=10**8)
    np.testing.assert_array_equal(x, preprocessing.to_tensor(preprocessing.fit(content, builtin), builtin))  # the content image


def test_style_transfer_without_a_style_image_is_422(jobs_client):
    spec = {"kind": "style_transfer", "model": MODEL}
    response = jobs_client.post("/v1/jobs", files={"image": ("c.png", encode(sample("chelsea")), "image/png")},
                                data={"spec": json.dumps(spec)})
    assert response.status_code == 422 and response.json()["error"]["code"] == "image_required"


def test_adversarial_job_flips_the_class(jobs_client):
    spec = {"kind": "adversarial", "model": MODEL, "params": {"target": "ostrich", "steps": 10}}
    response = jobs_client.post("/v1/jobs?wait=60", files={"image": ("c.png", encode(sample("chelsea")), "image/png")},
                                data={"spec": json.dumps(spec)})
    job = wait_for(jobs_client, response.json()["id"], timeout=120)
    assert job["status"] == "finished", job
    metrics = job["result"]["metrics"]
    assert metrics["final_class"] == 9 and metrics["linf"] <= 4
    assert {"image.png", "perturbation.png", "input.npy"} <= {a["name"] for a in job["result"]["artifacts"]}


def test_deepdream_job_keeps_the_uploaded_size(jobs_client):
    photo = sample("coffee")[:200, :300]
    spec = {"kind": "deepdream", "model": MODEL, "params": {"octaves": 2, "steps": 3}}
    response = jobs_client.post("/v1/jobs?wait=60", files={"image": ("c.png", encode(photo), "image/png")},
                                data={"spec": json.dumps(spec)})
    job = wait_for(jobs_client, response.json()["id"], timeout=120)
    assert job["status"] == "finished", job
    png = jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/image.png")
    assert Image.open(io.BytesIO(png.content)).size == (300, 200)


def test_feature_vis_job_is_started_with_its_final_total(jobs_client):
    """A client polling a running job sees `progress.total` from the first `started` answer, unchanged to the end."""
    steps = 40
    response = jobs_client.post("/v1/jobs", json={"kind": "feature_vis", "model": MODEL, "params": {
        "layer": "_blocks.3._relu1", "channel": 5, "size": 64, "steps": steps, "seed": 17}})
    assert response.status_code == 202, response.text
    job_id, seen = response.json()["id"], []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = jobs_client.get(f"/v1/jobs/{job_id}").json()
        seen.append((job["status"], job["progress"]))
        if job["status"] in ("finished", "failed", "canceled"):
            break
    started = [progress for status, progress in seen if status == "started"]
    assert started, seen  # polled while it ran
    assert started[0]["total"] == steps and {p["total"] for p in started} == {steps}, started
    assert seen[-1] == ("finished", {"step": steps, "total": steps}), seen[-1]
    events = jobs_client.get(f"/v1/jobs/{job_id}/events").text
    totals = {json.loads(line[len("data: "):])["total"] for block in events.split("\n\n") if "event: progress" in block
              for line in block.splitlines() if line.startswith("data: ")}
    assert totals == {steps}
