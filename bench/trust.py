"""Cost of the trust kinds on the built-in model at 224×224, against baselines measured in the same run.

    python -m bench.trust [--repeat 3] [--jobs 3] [--road-only]

- ROAD's noisy linear imputation per mask (`imputation.impute`) against the direct sparse solve of the same system
  (pytorch-grad-cam's `NoisyLinearImputer`, `bench.imputation`), on the 18 masks of a Grad-CAM-like and of a
  pixel-level ranking map;
- the default ROAD evaluation of one Grad-CAM map with its random control (4 maps: 90 imputed copies), against
  its forward passes alone (90 × the batched per-image forward), and the whole default evaluation (ROAD, then
  deletion/insertion);
- map first, end to end: a real API and worker (`bench.jobs.start_service`), `--jobs` Grad-CAM jobs followed by
  their events: the time from submitting until `attribution.npy` is read (its `artifact` event, then a GET)
  against the time until the job's `end`;
- deletion + insertion at 64 steps (the scores every attribution job computes, on ONNX Runtime), against
  passes × the batched per-image ONNX Runtime forward: the scores should cost forward passes only (≤ 1.2×);
- `rise` with 2,000 masks on ONNX Runtime, against 2,000 × the batched per-image forward;
- `kernel_shap` with 1,000 samples on ONNX Runtime, against captum's `KernelShap` on the torch model with the
  same superpixels, baseline, samples and batch (perturbations_per_eval).
Threads: ONNX Runtime intra-op and torch as the settings give them to a worker (1 and 1 by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import record as record_results  # noqa: E402
from bench.timing import median_s  # noqa: E402
from core import preprocessing  # noqa: E402
from core.kinds.registry import KINDS  # noqa: E402
from core.methods import ForwardTask  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models import forward, runtimes  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402
from workers.methods.attribution import gradcam, kernel_shap, rise  # noqa: E402
from workers.methods.mechanics import deletion_insertion  # noqa: E402
from workers.methods.task import Task  # noqa: E402
from workers.networks import load_network  # noqa: E402


def once_s(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def map_first(jobs: int) -> tuple[list[float], list[float]]:
    """(seconds until the map was read, seconds until the job ended) of `jobs` Grad-CAM jobs on a real API and
    worker started for the purpose, each on another crop of the cat (so none is answered from the cache)."""
    import json
    import os
    import uuid

    import httpx

    from bench.cleanup import delete_run
    from bench.jobs import photo, start_service
    from bench.timing import free_port

    token = uuid.uuid4().hex[:8]
    prefix, queue, port = f"bench-{token}:", f"bench-{token}", free_port()
    env = {**os.environ, "CONVSCOPE_REDIS_PREFIX": prefix, "CONVSCOPE_JOB_QUEUE": queue, "PYTHONPATH": str(ROOT),
           "CONVSCOPE_LOG_LEVEL": "WARNING", "CONVSCOPE_WORKER_WARM_UP": "false"}
    logs = ROOT / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    processes = start_service(env, port, logs)
    readable, ended = [], []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            for i in range(jobs + 1):  # the first warms the worker (network, sessions) and is not counted
                spec = {"kind": "gradcam", "model": BUILTIN_ID, "params": {}}
                start = time.perf_counter()
                job = http.post("/v1/jobs", files={"image": ("c.png", photo(100 + i), "image/png")},
                                data={"spec": json.dumps(spec)}).json()
                seen = None
                with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
                    for line in stream.iter_lines():
                        if seen is None and line.startswith("data: ") and '"attribution.npy"' in line:
                            assert http.get(json.loads(line[6:])["url"]).status_code == 200
                            seen = time.perf_counter() - start
                        if line.startswith("event: end"):
                            break
                done = time.perf_counter() - start
                if i:
                    readable.append(seen)
                    ended.append(done)
    finally:
        for process in processes:
            process.terminate()
            process.wait()
        delete_run(env.get("CONVSCOPE_REDIS_URL", Settings().redis_url), prefix, queue)
    return readable, ended


def road_figures(record, network, x: np.ndarray, classify, per_image: float, batch: int, repeat: int,
                 jobs: int) -> list[str]:
    """The ROAD lines of the report (see the module's docstring)."""
    from bench.imputation import direct_baseline, time_per_mask
    from workers.methods.mechanics import faithfulness, road

    lines = []
    params = KINDS["gradcam"].params().resolve(record)
    cam = gradcam.run(Task(network, torch.from_numpy(x), params))
    baseline_name, baseline = direct_baseline()
    maps = {"Grad-CAM": road.ranking_map(cam.attribution, x.shape),
            "pixel-level random": np.random.default_rng(0).random(x.shape[2:]).astype(np.float32)}
    for name, ranking in maps.items():
        figures = time_per_mask(x[0], ranking, repeat=repeat, baseline=baseline)
        lines.append(f"ROAD imputation, {name} ranking map, {figures['masks']} masks at 224²: "
                     f"{figures['impute_s'] * 1000:.1f} ms a mask (target ≤ 30) against {figures['direct_s'] * 1000:.0f} "
                     f"ms for {baseline_name} ({1 / figures['ratio']:.1f}× faster; max |difference| "
                     f"{figures['max_abs_diff']:.1e})")
    target = cam.metrics["target"]
    passes = params.road_passes()
    only_road = params.model_copy(update={"evaluation_steps": 2})
    road_s = median_s(lambda: faithfulness.evaluate(x, cam, target, classify, record, only_road, batch=batch),
                      repeat) - median_s(lambda: deletion_insertion.evaluate(
                          x, cam.attribution, target, classify, record, steps=2, batch=batch), repeat)
    whole_s = median_s(lambda: faithfulness.evaluate(x, cam, target, classify, record, params, batch=batch), repeat)
    lines.append(f"ROAD of one Grad-CAM map with {params.road_random_maps} random maps ({passes} imputed copies): "
                 f"{road_s:.2f} s (target ≤ 1.5 s); its forward passes alone {passes * per_image:.2f} s "
                 f"({road_s / (passes * per_image):.1f}×)")
    lines.append(f"whole default evaluation (ROAD, then deletion/insertion at {params.evaluation_steps} steps): "
                 f"{whole_s:.2f} s")
    if jobs:
        readable, ended = map_first(jobs)
        lines.append(f"map first, {jobs} Grad-CAM jobs end to end: map readable after "
                     f"{statistics.median(readable):.2f} s (median), job finished after {statistics.median(ended):.2f} s "
                     f"({statistics.median(ended) / statistics.median(readable):.1f}× later)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3, help="Grad-CAM jobs timed end to end for map first (0: none)")
    parser.add_argument("--road-only", action="store_true", help="only the ROAD figures")
    args = parser.parse_args()
    settings = Settings()
    torch.set_num_threads(settings.worker_torch_threads)
    store = ModelStore(settings.data_dir)
    record = store.get(BUILTIN_ID)
    rt = runtimes.Runtimes(store, settings).get(record)
    network = load_network(record, store, torch.device("cpu"))
    batch = settings.occlusion_batch

    import skimage.data
    from PIL import Image

    x = preprocessing.to_tensor(preprocessing.fit(Image.fromarray(skimage.data.chelsea()), record), record)

    def classify(copies: np.ndarray) -> np.ndarray:
        return forward.softmax(rt.logits(copies)).astype(np.float32)

    copies = np.repeat(x, batch, axis=0)
    per_image = median_s(lambda: rt.logits(copies), max(3, args.repeat)) / batch

    def params(kind, **raw):
        return KINDS[kind].params(**raw).resolve(record)

    head = (f"built-in model {BUILTIN_ID}, 224×224, ONNX Runtime {rt.plain.get_providers()[0]} intra threads "
            f"{settings.ort_intra_threads}, torch threads {settings.worker_torch_threads}, batch {batch}")
    lines = [head, f"batched per-image forward: ONNX Runtime {per_image * 1000:.1f} ms"]
    lines += road_figures(record, network, x, classify, per_image, batch, args.repeat, args.jobs)
    if args.road_only:
        print("\n".join(lines))
        record_results("trust (ROAD)", lines)
        return

    cam = gradcam.run(Task(network, torch.from_numpy(x), params("gradcam", evaluate=False)))
    target = cam.metrics["target"]
    steps = 64
    passes = deletion_insertion.passes(steps)
    scores = median_s(lambda: deletion_insertion.evaluate(x, cam.attribution, target, classify, record, steps=steps,
                                                          batch=batch), args.repeat)

    rise_s, _ = once_s(lambda: rise.run(ForwardTask(record, params("rise", masks=2000, target=target), x, classify,
                                                    batch=batch)))

    shap_params = params("kernel_shap", samples=1000, target=target)
    shap_s, shap = once_s(lambda: kernel_shap.run(ForwardTask(record, shap_params, x, classify, batch=batch)))
    labels = shap.arrays["segments"].astype(np.int64)

    from captum.attr import KernelShap

    module = network.module

    def softmax_forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(inputs).softmax(dim=1)

    torch.manual_seed(0)
    captum_s, _ = once_s(lambda: KernelShap(softmax_forward).attribute(
        torch.from_numpy(x), baselines=0.0, target=target, feature_mask=torch.from_numpy(labels)[None, None],
        n_samples=1000, perturbations_per_eval=batch))
    with torch.no_grad():
        torch_per_image = median_s(lambda: module(torch.from_numpy(copies)), max(3, args.repeat)) / batch

    lines += [
        f"batched per-image forward on torch: {torch_per_image * 1000:.1f} ms; target {target} ({record.label(target)})",
        f"deletion+insertion, {steps} steps: {scores:.2f} s for {passes} forward passes; "
        f"time / (passes × per-image) = {scores / (passes * per_image):.2f}",
        f"rise, 2000 masks: {rise_s:.1f} s; time / (2000 × per-image) = {rise_s / (2000 * per_image):.2f}",
        f"kernel_shap, 1000 samples, {shap.metrics['segments']} superpixels ({shap.metrics['coalitions']} distinct "
        f"coalitions run): {shap_s:.1f} s; captum KernelShap on torch, same superpixels, baseline, samples and batch: "
        f"{captum_s:.1f} s; ours / captum = {shap_s / captum_s:.2f}"]
    print("\n".join(lines))
    record_results("trust", lines)


if __name__ == "__main__":
    main()
