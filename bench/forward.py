"""Forward-view latency of the built-in model at 224×224 against a bare ONNX Runtime forward.

Starts the API (uvicorn, real Redis) in a subprocess, uploads one photo, then times requests.
Usage: python bench/forward.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import images  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models import forward  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    settings = Settings()
    store = ModelStore(settings.data_dir)
    record = store.get(BUILTIN_ID)
    rt = forward.Runtimes(store, settings).get(record)

    import skimage.data
    from PIL import Image

    photo = Image.fromarray(skimage.data.chelsea())
    x = images.to_tensor(images.fit(photo, record), record)
    bare = median_ms(lambda: rt.logits(x), args.repeat)
    batch = settings.occlusion_batch
    xb = np.repeat(x, batch, axis=0)
    per_image_batched = median_ms(lambda: rt.logits(xb), max(3, args.repeat // 5)) / batch

    port = free_port()
    env = {**os.environ, "CONVSCOPE_PORT": str(port), "CONVSCOPE_LOG_LEVEL": "WARNING",
           "CONVSCOPE_REDIS_PREFIX": "bench-forward:"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                               "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(100):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            buf = io.BytesIO()
            photo.save(buf, format="PNG")
            image_id = client.post("/v1/images", files={"file": ("cat.png", buf.getvalue(), "image/png")}).json()["id"]
            url = f"/v1/models/{BUILTIN_ID}"
            # Distinct images (one pixel changed) for cold requests that miss the input cache.
            fresh = []
            for i in range(args.repeat + 1):
                variant = np.asarray(photo).copy()
                variant[0, 0] = [i % 256, i // 256, 7]
                out = io.BytesIO()
                Image.fromarray(variant).save(out, format="PNG")
                fresh.append(client.post("/v1/images", files={"file": ("v.png", out.getvalue(), "image/png")}).json()["id"])
            cold_ids = iter(fresh)

            def call(view, body):
                response = client.post(f"{url}/{view}", json={"image": {"id": image_id}, **body})
                assert response.status_code == 200, response.text
                return response

            predict = median_ms(lambda: call("predict", {}), args.repeat)
            predict_cold = median_ms(lambda: client.post(f"{url}/predict", json={"image": {"id": next(cold_ids)}}),
                                     args.repeat)
            act = median_ms(lambda: call("activations", {"layer": "_blocks.5._relu1"}), args.repeat)
            act_json = median_ms(lambda: call("activations", {"layer": "_blocks.5._relu1", "format": "json"}), args.repeat)
            occ_spec = {"patch": 32, "stride": 16, "format": "json"}
            occ = median_ms(lambda: call("occlusion", occ_spec), 3)
            positions = len(forward.occlusion_positions(224, 32, 16)) ** 2
            passes = positions + 1
    finally:
        server.terminate()
        server.wait()

    print(f"built-in model {BUILTIN_ID}, 224×224, ONNX Runtime {rt.plain.get_providers()[0]}, "
          f"intra threads {settings.ort_intra_threads}, median of {args.repeat}")
    print(f"{'what':46} {'ms':>9} {'× bare':>8}")
    for name, ms in [("bare ORT forward (batch 1)", bare), ("predict over HTTP (image seen before)", predict),
                     ("predict over HTTP (new image: decode+resize)", predict_cold),
                     ("activations PNG over HTTP (_blocks.5._relu1)", act),
                     ("activations JSON over HTTP", act_json)]:
        print(f"{name:46} {ms:9.1f} {ms / bare:8.2f}")
    print(f"occlusion patch 32 stride 16: {occ:.0f} ms, {passes} forward passes, batched per-image forward "
          f"{per_image_batched:.1f} ms (batch {batch}); time / (passes × per-image) = "
          f"{occ / (passes * per_image_batched):.2f}")


if __name__ == "__main__":
    main()
