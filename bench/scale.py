"""Scale figures: job throughput with 1 and 2 workers, queue latency at 0, 10 and 100 queued jobs, the API's
memory while cycling through eight zoo-sized models under a low session budget, and /healthz while a large
model is uploaded and first used.

    python bench/scale.py [--jobs 16] [--budget-mib 1024] [--skip throughput,latency,memory,healthz]

Starts its own API (`python -m service.cli serve`) and workers (`python -m workers`) on spare ports, a private
Redis key prefix and queue (deleted afterwards). Each figure is printed next to a baseline measured in the same
run: 2 workers against 1, a deep queue against an empty one, a bounded session cache against an unbounded one,
/healthz during the upload against /healthz idle.

The eight models: no internet here, so the ONNX model zoo's files are stood in for by random-weight networks of
the same sizes built locally (AlexNet's own layers, 244 MB; ResNet-50's bottleneck layout, 98 MB; and plain
conv stacks with the parameter counts of DenseNet-121, Inception v1 and v2, ShuffleNet and SqueezeNet), plus the
built-in EfficientNet-Lite0. They are registered once into bench/out/zoo/ (the sandboxed analysis takes minutes)
and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cleanup import delete_run  # noqa: E402
from bench.timing import free_port, wait_ready  # noqa: E402
from core.settings import get_settings  # noqa: E402

OUT = ROOT / "bench" / "out"
ZOO = OUT / "zoo"
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def photo(i: int) -> bytes:
    import io

    import numpy as np
    import skimage.data
    from PIL import Image

    array = skimage.data.chelsea()[i % 40:, (i * 7) % 50:]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(out, format="PNG")
    return out.getvalue()


# The stand-ins for the model zoo's files.
def zoo_nets():
    import torch
    from torch import nn

    def alexnet():
        features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten())
        return nn.Sequential(features, nn.Linear(9216, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                             nn.Linear(4096, 1000))

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            cout = mid * 4
            self.body = nn.Sequential(nn.Conv2d(cin, mid, 1), nn.ReLU(), nn.Conv2d(mid, mid, 3, stride, 1), nn.ReLU(),
                                      nn.Conv2d(mid, cout, 1))
            self.skip = nn.Conv2d(cin, cout, 1, stride) if (cin != cout or stride != 1) else nn.Identity()

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    def resnet50():
        layers, cin = [nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
        for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for b in range(blocks):
                layers.append(Bottleneck(cin, mid, stride if b == 0 else 1))
                cin = mid * 4
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))

    def stack(widths, fc_in_side=7):
        """A plain conv stack (3×3, ReLU, a pool every second layer) ending in global pooling and a 1000-way head."""
        layers, cin = [], 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, 2 if i % 2 == 0 and i < 10 else 1, 1), nn.ReLU()]
            cin = w
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000))

    return {  # name: (net, approximate parameters of the zoo file it stands for)
        "alexnet": (alexnet, "61.1 M (244 MB)"),
        "resnet50": (resnet50, "25.6 M (98 MB)"),
        "densenet121": (lambda: stack([64, 128, 256, 256, 384, 384, 512, 512]), "8.0 M (32 MB)"),
        "inception-v1": (lambda: stack([64, 128, 192, 256, 320, 384, 480, 480]), "6.6 M (27 MB)"),
        "inception-v2": (lambda: stack([64, 128, 256, 320, 448, 512, 576, 640]), "11 M (45 MB)"),
        "shufflenet": (lambda: stack([24, 48, 96, 192, 240, 288, 384]), "2.3 M (9 MB)"),
        "squeezenet": (lambda: stack([64, 96, 128, 160, 192, 256]), "1.2 M (5 MB)"),
    }


def build_zoo() -> list[str]:
    """Register the stand-ins (once) into bench/out/zoo beside the built-in model; returns the model ids."""
    import io

    import torch

    from core.stores.models import ModelStore
    from models.builtin import BUILTIN_ID
    from models.register import register
    from models.sandbox import SandboxLimits
    from models.validate import Limits

    settings = get_settings()
    if not (ZOO / "models").exists():
        shutil.copytree(settings.data_dir / "models", ZOO / "models")
    store = ModelStore(ZOO)
    for name, (make, size) in zoo_nets().items():
        if store.get(name) is not None:
            continue
        torch.manual_seed(0)
        net = make().eval()
        buf = io.BytesIO()
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), buf, dynamo=False, opset_version=13,
                          input_names=["image"], output_names=["logits"])
        start = time.perf_counter()
        record = register(store, buf.getvalue(), model_id=name, name=name, source="upload", limits=Limits(),
                          sandbox=SandboxLimits(memory_bytes=16 * 1024**3, time_s=900, threads=1))
        print(f"  registered {name}: {record.size_bytes / MIB:.0f} MiB (zoo file: {size} parameters), "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return [BUILTIN_ID, *zoo_nets()]


class Service:
    """An API and some workers on a private prefix and queue."""

    def __init__(self, data_dir: Path, **env):
        token = uuid.uuid4().hex[:8]
        self.prefix, self.queue, self.port = f"bench-{token}:", f"bench-{token}", free_port()
        self.env = {**os.environ, "CONVSCOPE_REDIS_PREFIX": self.prefix, "CONVSCOPE_JOB_QUEUE": self.queue,
                    "CONVSCOPE_DATA_DIR": str(data_dir), "CONVSCOPE_LOG_LEVEL": "WARNING",
                    "CONVSCOPE_WORKER_WARM_UP": "false", "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in env.items()}}
        self.workers: list[subprocess.Popen] = []
        self.api = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT,
                                    env={**self.env, "CONVSCOPE_PORT": str(self.port)},
                                    stdout=open(OUT / f"scale-api-{token}.log", "wb"), stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        try:
            wait_ready(f"http://127.0.0.1:{self.port}")
        except TimeoutError:
            self.close()
            raise

    def start_worker(self) -> None:
        n = len(self.workers)
        self.workers.append(subprocess.Popen([sys.executable, "-m", "workers", "--name", f"{self.queue}-w{n}"],
                                             cwd=ROOT, env=self.env, stdout=open(OUT / f"scale-worker-{n}.log", "wb"),
                                             stderr=subprocess.STDOUT))
        client = redis.Redis.from_url(get_settings().redis_url)
        while not client.exists(f"{self.prefix}worker:{self.queue}-w{n}"):
            time.sleep(0.1)

    def stop_workers(self) -> None:
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            w.wait(30)
        self.workers = []

    def close(self) -> None:
        self.stop_workers()
        self.api.terminate()
        self.api.wait(30)
        delete_run(get_settings().redis_url, self.prefix, self.queue)

    def submit(self, i: int, kind: str = "saliency") -> dict:
        spec = {"kind": kind, "model": "efficientnet-lite0", "params": {"evaluate": False}}
        r = self.client.post("/v1/jobs", files={"image": ("x.png", photo(i), "image/png")},
                             data={"spec": json.dumps(spec)})
        assert r.status_code == 202, r.text
        return r.json()

    def wait_all(self, ids: list[str]) -> list[dict]:
        done = {}
        while len(done) < len(ids):
            for job_id in ids:
                if job_id not in done:
                    job = self.client.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] in ("finished", "failed", "canceled"):
                        assert job["status"] == "finished", job
                        done[job_id] = job
            time.sleep(0.05)
        return [done[i] for i in ids]


def when(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def throughput(service: Service, jobs: int, counter) -> None:
    rates = {}
    for workers in (1, 2):
        while len(service.workers) < workers:
            service.start_worker()
        service.wait_all([service.submit(next(counter))["id"]])  # warm: the network is loaded by every worker
        if workers == 2:
            service.wait_all([service.submit(next(counter))["id"] for _ in range(4)])
        start = time.perf_counter()
        ids = [service.submit(next(counter))["id"] for _ in range(jobs)]
        service.wait_all(ids)
        rates[workers] = jobs / (time.perf_counter() - start)
    cores = os.cpu_count()
    print(f"\nthroughput ({jobs} saliency jobs on the built-in model, evaluate off, 1 torch thread per worker, "
          f"{cores} cores shared with the API and whatever else runs here):")
    print(f"  1 worker : {rates[1]:.2f} jobs/s")
    print(f"  2 workers: {rates[2]:.2f} jobs/s   ({rates[2] / rates[1]:.2f}× one worker; the ceiling on {cores} "
          f"cores is {cores}×, less the API's share)")


def latency(service: Service, counter) -> None:
    rows = []
    service.stop_workers()
    service.start_worker()
    service.wait_all([service.submit(next(counter))["id"]])  # a warm, idle worker
    posts, pickup = [], []
    for _ in range(5):  # depth 0: each job alone in the queue, the worker waiting for it
        start = time.perf_counter()
        job = service.submit(next(counter))
        posts.append((time.perf_counter() - start) * 1000)
        done = service.wait_all([job["id"]])[0]
        pickup.append((when(done["started_at"]) - when(done["created_at"])) * 1000)
    rows.append((0, statistics.median(posts), statistics.median(pickup), max(pickup)))
    for depth in (10, 100):  # the backlog is queued with no worker, then one warm worker drains it
        service.stop_workers()
        ids, posts = [], []
        for _ in range(depth):
            start = time.perf_counter()
            ids.append(service.submit(next(counter))["id"])
            posts.append((time.perf_counter() - start) * 1000)
        service.start_worker()
        ordered = sorted(service.wait_all(ids), key=lambda j: when(j["started_at"]))[1:]  # the first loads the network
        gaps = [(when(b["started_at"]) - when(a["ended_at"])) * 1000 for a, b in zip(ordered, ordered[1:])]
        rows.append((depth, statistics.median(posts[-5:]), statistics.median(gaps), max(gaps)))
    service.stop_workers()
    print("\nqueue latency (POST /v1/jobs → 202 with that many jobs ahead, and a worker's pick-up: created → started "
          "for a job alone in the queue, previous ended → next started while draining a backlog):")
    base_post, base_pickup = rows[0][1], rows[0][2]
    for depth, post, pick, worst in rows:
        print(f"  {depth:>3} queued: POST p50 {post:6.1f} ms ({post / base_post:.2f}× empty)   "
              f"pick-up p50 {pick:6.1f} ms ({pick / base_pickup:.2f}× empty), max {worst:6.1f} ms")
    print("  (a job's wait behind N others is N × the job time: see the throughput above)")


def memory(models: list[str], budget_mib: int) -> None:
    rows = {}
    for label, budget in (("unbounded", 64 * 1024 * MIB), (f"{budget_mib} MiB", budget_mib * MIB)):
        service = Service(ZOO, CONVSCOPE_SESSION_CACHE_BYTES=budget, CONVSCOPE_MAX_CONCURRENT_REQUESTS=4)
        try:
            idle = rss_bytes(service.api.pid)
            peak, after = idle, []
            image = photo(1)
            for model in models:
                info = service.client.get(f"/v1/models/{model}").json()
                r = service.client.post(f"/v1/models/{model}/predict", files={"image": ("x.png", image, "image/png")},
                                        data={"spec": "{}"})
                assert r.status_code == 200, r.text
                peak = max(peak, rss_bytes(service.api.pid))
                layer = info["layers"][len(info["layers"]) // 2]["name"]
                r = service.client.post(f"/v1/models/{model}/activations",
                                        files={"image": ("x.png", image, "image/png")},
                                        data={"spec": json.dumps({"layer": layer, "format": "json"})})
                assert r.status_code == 200, r.text
                peak = max(peak, rss_bytes(service.api.pid))
                after.append(rss_bytes(service.api.pid))
            metrics = service.client.get("/metrics").text
            figures = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                       if line.startswith("convscope_onnxruntime_session")}
            rows[label] = (idle, peak, after[-1], figures)
        finally:
            service.close()
    print(f"\nAPI memory cycling through {len(models)} models (predict + activations each: plain and probe session):")
    base = rows["unbounded"]
    for label, (idle, peak, last, figures) in rows.items():
        print(f"  session budget {label:>10}: idle {idle / MIB:6.0f} MiB, peak {peak / MIB:6.0f} MiB "
              f"(+{(peak - idle) / MIB:5.0f} above idle), at the end {last / MIB:6.0f} MiB; "
              f"{figures.get('convscope_onnxruntime_sessions', 0):.0f} sessions held, "
              f"{figures.get('convscope_onnxruntime_session_bytes', 0) / MIB:.0f} MiB estimated, "
              f"{figures.get('convscope_onnxruntime_session_evictions', 0):.0f} evictions")
    bounded = rows[f"{budget_mib} MiB"]
    print(f"  peak above idle, bounded ÷ unbounded: {(bounded[1] - bounded[0]) / max(1, base[1] - base[0]):.2f}; "
          f"goal: under 1024 MiB above idle with a 1 GiB budget -> "
          f"{'met' if bounded[1] - bounded[0] < 1024 * MIB else 'NOT met'}")


POLLER = """
import sys, time, httpx
client = httpx.Client(base_url=f"http://127.0.0.1:{sys.argv[1]}", timeout=30)
while True:
    start = time.perf_counter()
    client.get("/healthz")
    ms = (time.perf_counter() - start) * 1000
    print(time.time(), ms, flush=True)
    time.sleep(max(0.0, 0.05 - (time.perf_counter() - start)))
"""


def healthz(models_dir: Path) -> None:
    alexnet = next(p for p in (models_dir / "models" / "blobs").glob("*.onnx") if p.stat().st_size > 200 * MIB)
    data = alexnet.read_bytes()
    fresh = OUT / f"scale-upload-{uuid.uuid4().hex[:6]}"
    shutil.copytree(get_settings().data_dir / "models", fresh / "models")
    service = Service(fresh)
    # The poller is its own process: polling from a thread of this one would measure this process's GIL,
    # held by httpx while it sends the upload, instead of the API.
    poller = subprocess.Popen([sys.executable, "-c", POLLER, str(service.port)], stdout=subprocess.PIPE, text=True)
    marks = {}
    try:
        time.sleep(5)
        marks["upload"] = time.time()
        r = service.client.post("/v1/models", files={"file": ("alexnet.onnx", data, "application/octet-stream")},
                                data={"name": "alexnet"})
        assert r.status_code == 201, r.text
        marks["predict"] = time.time()
        p = service.client.post(f"/v1/models/{r.json()['id']}/predict", files={"image": ("x.png", photo(2), "image/png")},
                                data={"spec": "{}"})
        assert p.status_code == 200, p.text
        marks["end"] = time.time()
        time.sleep(1)
    finally:
        poller.terminate()
        out = poller.communicate(timeout=30)[0]
        service.close()
        shutil.rmtree(fresh, ignore_errors=True)
    uploaded, first_predict = marks["predict"] - marks["upload"], marks["end"] - marks["predict"]
    samples = []
    for line in out.splitlines():
        at, ms = map(float, line.split())
        samples.append(("idle" if at < marks["upload"] else "busy" if at <= marks["end"] else "after", ms))

    def figures(phases) -> tuple[float, float, float, int]:
        values = sorted(ms for ph, ms in samples if ph in phases)
        return (statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.99))], values[-1],
                len(values))

    idle, busy = figures({"idle"}), figures({"busy"})
    print(f"\n/healthz polled every 50 ms ({len(data) / MIB:.0f} MiB AlexNet-sized upload: {uploaded:.1f} s to 201; "
          f"first predict, building its session: {first_predict:.2f} s):")
    print(f"  idle            : p50 {idle[0]:5.1f} ms, p99 {idle[1]:6.1f} ms, worst {idle[2]:6.1f} ms ({idle[3]} polls)")
    print(f"  upload + predict: p50 {busy[0]:5.1f} ms, p99 {busy[1]:6.1f} ms, worst {busy[2]:6.1f} ms ({busy[3]} polls); "
          f"p99 {busy[1] / idle[1]:.1f}× idle; goal p99 ≤ 50 ms and worst ≤ 250 ms -> "
          f"{'met' if busy[1] <= 50 and busy[2] <= 250 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--budget-mib", type=int, default=1024)
    parser.add_argument("--skip", default="", help="comma list of parts to leave out")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    OUT.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 10**6))
    print(f"{os.cpu_count()} cores here; ORT intra threads {get_settings().ort_intra_threads}, torch threads per "
          f"worker {get_settings().worker_torch_threads}", flush=True)
    if not {"throughput", "latency"} <= skip:
        service = Service(get_settings().data_dir)
        try:
            if "throughput" not in skip:
                throughput(service, args.jobs, counter)
            if "latency" not in skip:
                latency(service, counter)
        finally:
            service.close()
    if not {"memory", "healthz"} <= skip:
        print("\nzoo-sized models (built once, random weights):", flush=True)
        models = build_zoo()
        if "memory" not in skip:
            memory(models, args.budget_mib)
        if "healthz" not in skip:
            healthz(ZOO)


if __name__ == "__main__":
    main()
