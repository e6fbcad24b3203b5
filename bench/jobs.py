"""Jobs end to end vs the same computation in torch vs captum, built-in model at 224×224.

    python bench/jobs.py [--repeats 5]

Starts its own API (`python -m service.cli serve` on a spare port) and one worker
(`python -m workers`) against the configured Redis, under a private key prefix and queue
(deleted afterwards). For each method it reports the median wall time of
- job: POST /v1/jobs?wait=60 (multipart image) until every artifact is downloaded (one keep-alive
  connection of `bench.timing.Lean`: a lean client, so that the figures are the service's),
- torch: the worker's method function called directly in this process (same thread count),
- captum: captum's implementation of the same computation (the same class target; IG with its
  convergence delta, which is our `completeness_gap`),
and what a job costs besides its method: end to end minus the method's own compute, both as measured in the
job (its `method` stage in the worker's log, per job: no drift between the two) and as the torch column,
and end to end minus the worker's time on it (`ended_at − started_at`: image decode, method, PNG/npy
encoding, storing). Attribution jobs score their map by deletion/insertion unless `"evaluate": false`:
the table is printed with evaluate off (the overhead figure) and on (the default), in the same run.
Every repetition uses a different image, so no job is answered from the cache.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cleanup import delete_run  # noqa: E402
from bench.timing import Lean, alternate_ms, free_port, wait_ready  # noqa: E402
from core import images, preprocessing  # noqa: E402
from core.settings import get_settings  # noqa: E402
from models.sessions import keep_freed_buffers  # noqa: E402

MODEL = "efficientnet-lite0"
METHODS = {  # kind: params of the job (and of the direct and captum calls)
    "saliency": {},
    "guided_backprop": {},
    "deconvnet": {},
    "gradcam": {},
    "smoothgrad": {"samples": 16},
    "integrated_gradients": {"steps": 32},
}


SINGLE_PASS = ("saliency", "guided_backprop", "deconvnet", "gradcam")  # one forward and one backward


def photo(i: int) -> bytes:
    import skimage.data

    array = skimage.data.chelsea()[i % 40:, (i * 7) % 50:]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(out, format="PNG")
    return out.getvalue()


def captum_call(kind: str, net, x: torch.Tensor, target: int, batch: int):
    from captum.attr import Deconvolution, GuidedBackprop, IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency

    if kind == "saliency":
        return lambda: Saliency(net).attribute(x, target=target, abs=False)
    if kind == "guided_backprop":
        return lambda: GuidedBackprop(net).attribute(x, target=target)
    if kind == "deconvnet":
        return lambda: Deconvolution(net).attribute(x, target=target)
    if kind == "gradcam":
        return lambda: LayerGradCam(net, net.get_submodule("_relu1")).attribute(x, target=target)
    if kind == "smoothgrad":
        sigma = 0.15 * float(x.max() - x.min())
        return lambda: NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=16, stdevs=sigma,
                                                             nt_samples_batch_size=batch, target=target, abs=False)
    baseline = torch.full_like(x, -1.0)  # black in this model's input space
    return lambda: IntegratedGradients(net).attribute(x, baselines=baseline, target=target, n_steps=32,
                                                      internal_batch_size=batch, return_convergence_delta=True)


def direct_call(kind: str, network, x: torch.Tensor, target: int, batch: int):
    from core.kinds.registry import KINDS
    from workers.methods import method_of
    from workers.methods.task import Task

    entry = KINDS[kind]
    method = method_of(entry)
    params = entry.params.model_validate({**METHODS[kind], "target": target}).resolve(network.record)
    return lambda: method(Task(network, x, params, batch=batch))


def start_service(env: dict, port: int, logs: Path) -> list[subprocess.Popen]:
    api = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env={**env, "CONVSCOPE_PORT": str(port)},
                           stdout=open(logs / "api.log", "wb"), stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env={**env, "CONVSCOPE_LOG_LEVEL": "INFO"},
                              stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}")
    except TimeoutError:
        for process in (api, worker):
            process.terminate()
        raise
    return [api, worker]


def job_once(client: Lean, kind: str, image: bytes, evaluate: bool, target: int,
             parts: dict | None = None) -> tuple[float, float, str]:
    """(end-to-end seconds, worker seconds, job id) of one job; `parts` collects where the rest went (s): submit (POST sent →
    record created), pickup (created → claimed by the worker), wake (ended → the answer to ?wait= received),
    download (the artifacts fetched)."""
    params = {**METHODS[kind], "evaluate": evaluate, "target": target}
    wall_start, start = time.time(), time.perf_counter()
    _, answer = client.post_multipart("/v1/jobs?wait=60", {"spec": json.dumps({"kind": kind, "model": MODEL,
                                                                             "params": params})},
                                      {"image": ("x.png", image, "image/png")})
    answered = time.time()
    job = json.loads(answer)
    assert job.get("status") == "finished" and not job["cached"], job
    for artifact in job["result"]["artifacts"]:
        assert client.get(artifact["url"])[0] == 200
    wall = time.perf_counter() - start
    created, started, ended = (datetime.fromisoformat(job[k]).timestamp() for k in ("created_at", "started_at",
                                                                                      "ended_at"))
    if parts is not None:
        for name, seconds in (("submit", created - wall_start), ("pickup", started - created),
                              ("wake", answered - ended), ("download", wall_start + wall - answered)):
            parts.setdefault(name, []).append(seconds)
    return wall, ended - started, job["id"]


def ended_jobs(log: Path) -> list[dict]:
    """The worker's `job ended` log lines (stage times in ms, the job id, its kind)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "job ended" and "method_ms" in entry:
            found.append(entry)
    return found


def worker_stages(ended: list[dict]) -> dict[str, dict[str, float]]:
    """Median stage times of the jobs without scores, per kind."""
    found: dict[str, dict[str, list[float]]] = {}
    for entry in ended:
        if entry.get("scores_ms", 0) == 0:
            for key, value in entry.items():
                if key.endswith("_ms") and key != "scores_ms":
                    found.setdefault(entry["kind"], {}).setdefault(key, []).append(value)
    return {kind: {k: statistics.median(v) for k, v in figures.items()} for kind, figures in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(METHODS), help="comma list of kinds (default: all)")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k in METHODS]
    settings = get_settings()
    keep_freed_buffers()  # the direct calls run with the worker's allocator policy, as its jobs do
    torch.set_num_threads(settings.worker_torch_threads)
    token = uuid.uuid4().hex[:8]
    prefix, queue, port = f"bench-{token}:", f"bench-{token}", free_port()
    env = {**os.environ, "CONVSCOPE_REDIS_PREFIX": prefix, "CONVSCOPE_JOB_QUEUE": queue,
           "CONVSCOPE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
           "CONVSCOPE_WORKER_WARM_UP": "false"}  # UMAP's JIT warm-up would take a core during the first jobs
    logs = ROOT / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    processes = start_service(env, port, logs)
    try:
        from core.stores.models import ModelStore
        from workers.networks import load_network

        store = ModelStore(settings.data_dir)
        record = store.get(MODEL)
        network = load_network(record, store, torch.device("cpu"))
        decoded = images.decode(photo(0), max_bytes=10**8, max_pixels=10**8)
        x = torch.from_numpy(preprocessing.to_tensor(preprocessing.fit(decoded, record), record))
        target = int(network.module(x).argmax())
        client = Lean(port)
        counter = iter(range(1, 10**6))
        rows, parts = [], {}
        for kind in kinds:
            direct, reference = alternate_ms((direct_call(kind, network, x, target, settings.attribution_batch),
                                              captum_call(kind, network.module, x, target, settings.attribution_batch)),
                                             args.repeats)
            row = {"kind": kind, "torch": direct, "captum": reference}
            for evaluate in (False, True):
                job_once(client, kind, photo(next(counter)), evaluate, target)  # warm-up
                samples = [job_once(client, kind, photo(next(counter)), evaluate, target, parts if not evaluate else None)
                           for _ in range(args.repeats)]
                row[evaluate] = (statistics.median(s[0] for s in samples) * 1000,
                                 statistics.median(s[0] - s[1] for s in samples) * 1000)
                if not evaluate:
                    row["jobs"] = [(s[0] * 1000, s[2]) for s in samples]
            rows.append(row)
        ended = ended_jobs(logs / "worker.log")
        method_ms = {entry["job"]: entry["method_ms"] for entry in ended}
        for row in rows:  # each job's end to end minus its own method stage (the worker's log): no drift between the two
            row["beside"] = statistics.median(wall - method_ms[job_id] for wall, job_id in row["jobs"])
        print(f"built-in {MODEL} at 224×224, CPU, torch threads {settings.worker_torch_threads}, "
              f"batch {settings.attribution_batch}, median of {args.repeats}\n")
        print(f"{'method':<22}{'torch ms':>9}{'captum ms':>10}{'torch/captum':>13} | evaluate off:{'e2e ms':>8}"
              f"{'e2e−torch':>10}{'e2e−method':>11}{'e2e−worker':>11} | evaluate on:{'e2e ms':>8}{'e2e−worker':>11}")
        for row in rows:
            (off, off_q), (on, on_q) = row[False], row[True]
            print(f"{row['kind']:<22}{row['torch']:>9.1f}{row['captum']:>10.1f}{row['torch'] / row['captum']:>13.2f} | "
                  f"{'':12}{off:>8.1f}{off - row['torch']:>10.1f}{row['beside']:>11.1f}{off_q:>11.1f} | "
                  f"{'':11}{on:>8.1f}{on_q:>11.1f}")
        single = [row for row in rows if row["kind"] in SINGLE_PASS]
        if single:
            print("\nsingle-pass kinds, evaluate off: end to end − the method's compute (target ≤ 25 ms): against each "
                  f"job's own method stage, median {statistics.median(r['beside'] for r in single):.1f} ms, max "
                  f"{max(r['beside'] for r in single):.1f} ms; against the direct torch call timed apart, median "
                  f"{statistics.median(r[False][0] - r['torch'] for r in single):.1f} ms")
        print(f"end to end − worker time (queue, submit, wait, artifact downloads), evaluate off: median "
              f"{statistics.median(row[False][1] for row in rows):.1f} ms; of it, medians over every job: " +
              ", ".join(f"{name} {statistics.median(values) * 1000:.1f} ms" for name, values in parts.items()))
        stages = worker_stages(ended)
        if stages:
            print("worker stages, evaluate off (medians, ms): " + "; ".join(
                f"{kind}: " + ", ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in figures.items())
                for kind, figures in stages.items()))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        delete_run(settings.redis_url, prefix, queue)


if __name__ == "__main__":
    main()
