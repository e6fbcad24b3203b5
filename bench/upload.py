"""Upload-to-ready time of a model, the API's memory during it, and the API's latency meanwhile.

Starts the API (uvicorn, real Redis, a temporary data dir holding a copy of the built-in model)
in a subprocess, then uploads (1) the built-in model's ONNX file and (2) a VGG-16-sized network
with random weights (138 M parameters, 528 MiB, built and exported here, cached in bench/out/).
While each upload runs, a second thread keeps calling `/healthz` and `predict` on the built-in
model; their latencies, and the API's and the sandbox child's resident memory (sampled from
/proc every 20 ms), are reported against the same measurements taken before the upload.

Usage: python bench/upload.py [--skip-vgg]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cleanup import delete_run  # noqa: E402
from bench.timing import free_port, wait_ready  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402

OUT = ROOT / "bench" / "out"


def vgg16_onnx() -> Path:
    """VGG-16 (configuration D, 224×224, 1000 classes) with seeded random weights, opset 17."""
    path = OUT / "vgg16-random.onnx"
    if path.exists():
        return path
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers, channels = [], 3
    for width in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
                        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000)).eval()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "n"}})
    return path


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


class Sampler(threading.Thread):
    """Peak RSS of the API process and of its (sandbox) children, every 20 ms; `mark()` starts a
    new phase (the upload, then the first predict, which builds the serving session)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.api_peaks, self.child_peak = [0], 0

    def mark(self):
        self.api_peaks.append(0)

    def run(self):
        while not self.stop.is_set():
            self.api_peaks[-1] = max(self.api_peaks[-1], rss_kib(self.pid))
            self.child_peak = max([self.child_peak] + [rss_kib(c) for c in children(self.pid)])
            time.sleep(0.02)


class Prober(threading.Thread):
    """Calls /healthz and predict (built-in model) in a loop; keeps every latency in ms."""

    def __init__(self, base: str, image_id: str):
        super().__init__(daemon=True)
        self.base, self.image_id, self.stop = base, image_id, threading.Event()
        self.health: list[tuple[float, float]] = []  # (finished at, ms)
        self.predict: list[tuple[float, float]] = []
        self.errors = 0

    def run(self):
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self.stop.is_set():
                for url, kwargs, bucket in (("/healthz", None, self.health),
                                            (f"/v1/models/{BUILTIN_ID}/predict", {"image": {"id": self.image_id}},
                                             self.predict)):
                    start = time.perf_counter()
                    response = client.post(url, json=kwargs) if kwargs else client.get(url)
                    end = time.perf_counter()
                    bucket.append((end, (end - start) * 1000))
                    self.errors += response.status_code != 200
                time.sleep(0.05)


def summary(samples: list[tuple[float, float]], since: float = 0.0, until: float = float("inf")) -> str:
    """Latencies of the requests that finished in [since, until)."""
    values = [ms for end, ms in samples if since <= end < until]
    if not values:
        return "no samples"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"n={len(values):4d} median {statistics.median(values):7.1f} ms  p95 {p95:7.1f} ms  "
            f"max {max(values):7.1f} ms")


def probe_for(base: str, image_id: str, seconds: float) -> Prober:
    prober = Prober(base, image_id)
    prober.start()
    time.sleep(seconds)
    prober.stop.set()
    prober.join()
    return prober


def measure_upload(client: httpx.Client, base: str, pid: int, image_id: str, path: Path, name: str) -> None:
    size = path.stat().st_size
    idle = probe_for(base, image_id, 3.0)
    baseline = rss_kib(pid)
    sampler, prober = Sampler(pid), Prober(base, image_id)
    sampler.start()
    prober.start()
    time.sleep(0.3)
    start = time.perf_counter()
    with path.open("rb") as f:
        response = client.post("/v1/models", files={"file": (path.name, f, "application/octet-stream")},
                               data={"name": name})
    accepted_at = time.perf_counter()
    sampler.mark()
    assert response.status_code == 201, response.text
    model = response.json()["id"]
    first = client.post(f"/v1/models/{model}/predict", json={"image": {"id": image_id}})
    ready_at = time.perf_counter()
    assert first.status_code == 200, first.text
    time.sleep(0.3)
    prober.stop.set()
    sampler.stop.set()
    prober.join()
    sampler.join()
    upload_peak, serve_peak = sampler.api_peaks
    print(f"\n== {name}: {size / 2 ** 20:.1f} MiB ONNX file, {len(response.json()['layers'])} layers")
    print(f"upload → 201 (sent, validated, probed, twin checked, stored): {accepted_at - start:6.2f} s")
    print(f"upload → first predict on it answered (ready):              {ready_at - start:6.2f} s")
    print(f"API process RSS: {baseline / 1024:.0f} MiB before; peak during the upload {upload_peak / 1024:.0f} MiB "
          f"(+{(upload_peak - baseline) / 1024:.0f}); peak during the first predict (builds its ORT session) "
          f"{serve_peak / 1024:.0f} MiB; sandbox child peak {sampler.child_peak / 1024:.0f} MiB")
    print(f"/healthz before the upload     : {summary(idle.health)}")
    print(f"/healthz while uploading       : {summary(prober.health, start, accepted_at)}")
    print(f"/healthz during first predict  : {summary(prober.health, accepted_at, ready_at)}")
    print(f"predict before the upload      : {summary(idle.predict)}")
    print(f"predict while uploading        : {summary(prober.predict, start, accepted_at)}")
    print(f"predict during first predict   : {summary(prober.predict, accepted_at, ready_at + 0.1)}")
    print(f"(predict = built-in model, 224×224; errors {prober.errors})")
    assert client.delete(f"/v1/models/{model}").status_code == 204


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-vgg", action="store_true")
    args = parser.parse_args()
    source = ModelStore(Settings().data_dir)
    record = source.get(BUILTIN_ID)
    assert record is not None, "register the built-in model first: python -m models.builtin"
    builtin_file = source.blob_path(record.onnx_sha256)
    vgg = None if args.skip_vgg else vgg16_onnx()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    shutil.copytree(source.root, data_dir / "models")
    prefix = f"bench-upload-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {**os.environ, "CONVSCOPE_DATA_DIR": str(data_dir), "CONVSCOPE_REDIS_PREFIX": prefix,
           "CONVSCOPE_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                               "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            wait_ready(base, timeout=20)
            image_id = _upload_photo(client)
            client.post(f"/v1/models/{BUILTIN_ID}/predict", json={"image": {"id": image_id}})  # warm the session
            print(f"machine: {os.cpu_count()} CPUs; API and sandbox each use 1 thread (settings)")
            measure_upload(client, base, server.pid, image_id, builtin_file, "efficientnet-lite0 (built-in file)")
            if vgg is not None:
                measure_upload(client, base, server.pid, image_id, vgg, "vgg16-sized, random weights")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
        delete_run(Settings().redis_url, prefix)


def _upload_photo(client: httpx.Client) -> str:
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format="PNG")
    return client.post("/v1/images", files={"file": ("cat.png", buf.getvalue(), "image/png")}).json()["id"]


if __name__ == "__main__":
    main()
