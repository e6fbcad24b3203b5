"""The Python client against the real service, a real worker and Redis: predict, a job run to its end, errors."""

from __future__ import annotations

import io

import pytest
from convscope_client import AsyncClient, Client, ConvscopeError, JobFailed
from PIL import Image

from tests.clients.conftest import MODEL, readme_block
from tests.conftest import run_async

FAST = {"evaluate": False}  # the Grad-CAM map alone: ROAD and deletion/insertion scoring would take most of the run


def is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n")


def test_predict_from_a_path_bytes_a_pil_image_and_an_uploaded_id(service, cat_file):
    with Client(service.url, api_key=service.key) as client:
        top = client.predict(MODEL, cat_file, top_k=3)
        assert len(top) == 3 and top[0].label and 0 < top[0].probability <= 1
        image = Image.open(cat_file)
        uploaded = client.upload_image(cat_file.read_bytes())
        for same in (str(cat_file), cat_file.read_bytes(), image, uploaded.id):
            assert [p.index for p in client.predict(MODEL, same, top_k=3)] == [p.index for p in top]


def test_run_follows_a_gradcam_job_to_its_end_with_progress(service, cat_file):
    seen = []
    with Client(service.url, api_key=service.key) as client:
        job = client.run("gradcam", MODEL, cat_file, params=FAST, on_progress=lambda step, total: seen.append((step, total)))
        assert job.status == "finished" and job.progress.step == job.progress.total > 0
        assert seen and seen[-1] == (job.progress.total, job.progress.total)
        assert [step for step, _ in seen] == sorted(step for step, _ in seen)
        heatmap, size = job.artifact("heatmap.png"), client.model(MODEL).input  # drawn over the image as the model sees it
        assert is_png(heatmap) and Image.open(io.BytesIO(heatmap)).size == (size.width, size.height)
        assert job.image("heatmap.png").size == (size.width, size.height)
        assert job.array("attribution.npy").ndim == 3
        assert client.job(job.id).status == "finished" and job.id in {j.id for j in client.jobs(kind="gradcam")}


def test_errors_carry_status_code_and_message(service, cat_file):
    with Client(service.url, api_key=service.key) as client:
        with pytest.raises(ConvscopeError) as unknown:
            client.predict("no-such-model", cat_file)
        assert unknown.value.status == 404 and unknown.value.code and unknown.value.message
        with pytest.raises(ConvscopeError) as invalid:
            client.submit("gradcam", MODEL, cat_file, params={"no_such_param": 1})
        assert invalid.value.status == 422
    with Client(service.url, api_key="wrong") as stranger, pytest.raises(ConvscopeError) as refused:
        stranger.models()
    assert refused.value.status == 401


def test_a_job_that_does_not_finish_raises_with_its_ending(service):
    """Canceled from another client while `run` follows it: `JobFailed`, a ConvscopeError, with the ended Job."""
    with Client(service.url, api_key=service.key) as client, Client(service.url, api_key=service.key) as other:
        def cancel_once_started(step: int, total: int) -> None:
            if step >= 1:
                other.cancel(client.jobs(kind="feature_vis", status="started")[0].id)

        with pytest.raises(JobFailed) as ended:
            client.run("feature_vis", MODEL, params={"layer": "_relu1", "channel": 0, "size": 64, "steps": 2000},
                       on_progress=cancel_once_started)
    error = ended.value
    assert isinstance(error, ConvscopeError) and error.status is None
    assert error.job.status == "canceled" and error.code == "canceled" and error.job.progress.step < 2000


def test_the_async_client_does_the_same(service, cat_file):
    async def scenario():
        seen = []
        async with AsyncClient(service.url, api_key=service.key) as client:
            top = await client.predict(MODEL, cat_file, top_k=2)
            job = await client.run("gradcam", MODEL, cat_file, params={**FAST, "target": top[1].index},
                                   on_progress=lambda step, total: seen.append((step, total)))
            heatmap = await job.artifact("heatmap.png")
            with pytest.raises(ConvscopeError) as unknown:
                await client.predict("no-such-model", cat_file)
            return top, job, seen, heatmap, unknown.value

    top, job, seen, heatmap, unknown = run_async(scenario())
    assert len(top) == 2 and job.status == "finished" and job.params["target"] == top[1].index
    assert seen and seen[-1] == (job.progress.total, job.progress.total)
    assert is_png(heatmap) and unknown.status == 404


def test_the_readme_example_runs(service, cat_file, tmp_path, capsys, monkeypatch):
    code = readme_block("python").replace('api_key=None', f'api_key="{service.key}"')
    code = code.replace('"http://127.0.0.1:8000"', f'"{service.url}"')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cat.jpg").write_bytes(cat_file.read_bytes())
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    step, total = printed[-1].split(" / ")  # the last progress report: the job's end
    assert printed[0] and int(step) == int(total) > 0
    assert is_png((tmp_path / "heatmap.png").read_bytes())


def test_the_other_reads_parse_into_their_models(service, cat_file):
    with Client(service.url, api_key=service.key) as client, Client(service.url) as keyless:
        assert client.auth().keys_required and client.auth().key == "valid" and keyless.auth().key == "missing"
        assert client.health() and client.ready() and client.usage().tenant == "clients"
        model = client.model(MODEL)
        assert model.layers and MODEL in {m.id for m in client.models()}
        layer = model.layers[-1].name
        stats = client.activations(MODEL, cat_file, layer, format="json")
        assert stats.layer == layer and len(stats.stats.max) == stats.shape[0]
        assert is_png(client.activations(MODEL, cat_file, layer, channels=[0, 1]))
        occlusion = client.occlusion(MODEL, cat_file, format="json", patch=112, stride=112)
        assert len(occlusion.map) == 2 and 0 < occlusion.baseline_probability <= 1
        circuit = client.circuit(MODEL, "_blocks.1._bn1", 0, k=3)
        assert len(circuit.inputs) == 3 and circuit.channel == 0
        assert is_png(client.filters(MODEL, "_bn0"))
