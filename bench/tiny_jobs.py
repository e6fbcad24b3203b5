"""Single-pass jobs on a tiny model, end to end: what a job costs besides its method.

    python -m bench.tiny_jobs [--repeats 30] [--kinds saliency,gradcam]

On the built-in model a job's own compute hides the service's overhead; on a tiny network (two convolutions,
64×64 input) the method takes a few milliseconds, so what remains is the submit, the queue, the worker's claim,
storing and the answer. Starts its own API and one worker (as `bench/jobs.py` does), uploads the tiny model
through the API, then for each kind runs `--repeats` jobs with `"evaluate": false`, each on a new image so that
none is answered from the cache, every one `POST /v1/jobs?wait=10` until the finished Job is received (one
keep-alive connection of `bench.timing.Lean`). The baseline, measured in the same run, is the worker's method
function called directly in this process on the same network: the ratio is end to end over it, and the Job's
own `timing` split (queued, started, method, stored) says where the difference goes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cleanup import delete_run  # noqa: E402
from bench.jobs import direct_call, start_service  # noqa: E402
from bench.results import record  # noqa: E402
from bench.timing import Lean, free_port, median_s  # noqa: E402
from core import images, preprocessing  # noqa: E402
from core.settings import get_settings  # noqa: E402

SIDE = 64
PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": SIDE, "crop": SIDE}


def tiny_onnx() -> bytes:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    out = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 3, SIDE, SIDE), out, dynamo=False, opset_version=13)
    return out.getvalue()


def noise_png(rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--kinds", default="saliency,gradcam")
    args = parser.parse_args()
    settings = get_settings()
    torch.set_num_threads(settings.worker_torch_threads)
    token = uuid.uuid4().hex[:8]
    prefix, queue, port = f"bench-tiny-{token}:", f"bench-tiny-{token}", free_port()
    env = {**os.environ, "CONVSCOPE_REDIS_PREFIX": prefix, "CONVSCOPE_JOB_QUEUE": queue,
           "CONVSCOPE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "CONVSCOPE_WORKER_WARM_UP": "false"}
    logs = ROOT / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    processes = start_service(env, port, logs)
    lines: list[str] = []
    try:
        client = Lean(port)
        labels = "\n".join(f"class {i}" for i in range(10)).encode()
        status, answer = client.post_multipart("/v1/models", {"name": "Tiny", "preprocess": json.dumps(PREPROCESS)},
                                               {"file": ("tiny.onnx", tiny_onnx(), "application/octet-stream"),
                                                "labels": ("labels.txt", labels, "text/plain")})
        assert status == 201, answer
        model = json.loads(answer)["id"]

        from core.stores.models import ModelStore
        from workers.networks import load_network

        store = ModelStore(settings.data_dir)
        network = load_network(store.get(model), store, torch.device("cpu"))
        rng = np.random.default_rng(0)
        decoded = images.decode(noise_png(rng), max_bytes=10**8, max_pixels=10**8)
        x = torch.from_numpy(preprocessing.to_tensor(preprocessing.fit(decoded, network.record), network.record))
        target = int(network.module(x).argmax())
        header = (f"{'kind':<10}{'method ms':>10}{'job ms':>8}{'min':>7}{'× method':>9} | Job timing medians, ms: "
                  "queued  started  method  stored  total | outside the job")
        print(header)
        lines.append(header)
        for kind in args.kinds.split(","):
            method = 1000 * median_s(direct_call(kind, network, x, target, settings.attribution_batch), args.repeats)
            walls, timings = [], []
            for i in range(args.repeats + 3):  # the first three warm the worker's network and the API's session
                spec = {"kind": kind, "model": model, "params": {"evaluate": False, "target": target}}
                start = time.perf_counter()
                status, answer = client.post_multipart("/v1/jobs?wait=10", {"spec": json.dumps(spec)},
                                                       {"image": ("x.png", noise_png(rng), "image/png")})
                wall = (time.perf_counter() - start) * 1000
                job = json.loads(answer)
                assert status == 200 and job["status"] == "finished" and not job["cached"], job
                if i >= 3:
                    walls.append(wall)
                    timings.append(job["timing"])
            e2e = statistics.median(walls)
            split = "  ".join(f"{statistics.median(t[name] for t in timings):6.1f}"
                              for name in ("queued", "started", "method", "stored", "total"))
            outside = statistics.median(w - t["total"] for w, t in zip(walls, timings, strict=True))
            line = (f"{kind:<10}{method:>10.1f}{e2e:>8.1f}{min(walls):>7.1f}{e2e / method:>8.1f}× | "
                    f"{split:>47} | {outside:.1f}")
            print(line)
            lines.append(line)
    finally:
        for process in processes:
            process.terminate()
            process.wait()
        delete_run(settings.redis_url, prefix, queue)
    record(f"Tiny-model jobs end to end ({args.repeats} each, evaluate off)", lines)


if __name__ == "__main__":
    main()
