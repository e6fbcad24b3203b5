"""Forward views of the built-in model at 224×224 against a bare ONNX Runtime forward, alone and under load.

Starts the API (uvicorn, real Redis, a private key prefix deleted afterwards) in a subprocess, uploads photos, then
prints in one run:
- the bare forward (batch 1, the API's thread count) and the batched per-image floor: one run of 32 images, and
  32 in runs of the size `forward_batch_tune` measured as cheapest per image (what the API runs); and the
  forward ceiling: images/s with the API's runs at once going back to back, bare (no HTTP): about the most the
  load test can get on this machine (its mix is 80 % whole forwards);
Every timed row alternates with a bare forward in this process, in blocks of `--block` calls (5; the first of
each block not timed, so that each side runs warm, as back-to-back requests do; with 1, a call of one, then
the other): its ratio is its median over the median of the bare forwards timed beside it, so a machine whose
speed drifts during the run (a shared VM) moves both alike. HTTP calls go over one keep-alive socket
(`bench.timing.Lean`), and the load clients speak HTTP/1.1 over asyncio streams: lean clients, so that the figures
are the service's, not httpx's (on this 2-core machine the client shares the cores with the server).
- predict over HTTP (an image seen before; a new one: decode, resize, normalise);
- activations PNG and JSON of an early, a middle and the last layer (truncated sessions);
- occlusion patch 32 stride 8 and its ratio to passes × the batched per-image floor;
- a bounded load test on loopback from a second process: 32 clients for 30 s (70 % predict, 20 % activations
  JSON of the middle layer, 10 % predict on a new image; a 503/429 is waited out for its Retry-After):
  requests/s, p50/p99 per kind, 503 count, next to one client running the same mix for the same time.

Usage: python bench/forward.py [--repeat 30] [--block 5] [--clients 32] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cleanup import delete_run  # noqa: E402
from bench.timing import Lean, alternate_ms, free_port, median_s, wait_ready  # noqa: E402
from core import preprocessing  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models import forward, runtimes  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    """Median milliseconds of `repeat` calls after a warm-up (`bench.timing.median_s`)."""
    return 1000 * median_s(fn, repeat)


MIX = (("predict", 0.7), ("activations", 0.2), ("predict_new", 0.1))




async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                body: bytes) -> tuple[int, dict]:
    """One HTTP/1.1 POST on an open keep-alive connection: (status, headers); the body is read and dropped."""
    writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    await reader.readexactly(int(headers.get("content-length", 0)))
    return int(head[0].split()[1]), headers


def variants(photo, count: int, seed: int) -> list[bytes]:
    """PNG files of the photo, one pixel changed in each: new bytes, so they miss the input cache."""
    from PIL import Image

    out = []
    for i in range(count):
        pixels = np.asarray(photo).copy()
        pixels[0, 0] = [i % 256, (i // 256) % 256, seed]
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


async def load(base: str, clients: int, seconds: float, plan: dict) -> dict:
    """`clients` concurrent clients running the mix for `seconds`; latencies of 200s per kind, 503/429 counts."""
    fresh = iter(plan["fresh"])
    latencies: dict[str, list[float]] = {kind: [] for kind, _ in MIX}
    shed = {"503": 0, "429": 0, "other": 0, "no_retry_after": 0}
    end = time.perf_counter() + seconds
    rng = random.Random(0)

    def body(kind: str) -> dict:
        if kind == "predict":
            return {"image": {"id": plan["seen"]}}
        if kind == "predict_new":
            return {"image": {"id": next(fresh)}}
        return {"image": {"id": plan["seen"]}, "layer": plan["layer"], "format": "json"}

    host, port = base.removeprefix("http://").split(":")

    async def client_loop():
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < end:
                kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
                path = f"/v1/models/{BUILTIN_ID}/{'activations' if kind == 'activations' else 'predict'}"
                start = time.perf_counter()
                status, headers = await _post(reader, writer, path, json.dumps(body(kind)).encode())
                if status == 200:
                    latencies[kind].append(time.perf_counter() - start)
                elif status in (503, 429):
                    shed[str(status)] += 1
                    wait = headers.get("retry-after")
                    if wait is None:
                        shed["no_retry_after"] += 1
                    await asyncio.sleep(float(wait or 1))
                else:
                    shed["other"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    took = time.perf_counter() - started
    done = sum(len(v) for v in latencies.values())
    return {"clients": clients, "seconds": took, "ok": done, "rps": done / took, **shed,
            "kinds": {kind: {"n": len(v), "p50": _pct(v, 50), "p99": _pct(v, 99)} for kind, v in latencies.items()}}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def run_load(base: str, clients: int, seconds: float, plan: dict) -> dict:
    """The load from a second process (the clients' CPU is not the server's Python)."""
    out = subprocess.run([sys.executable, __file__, "--load-client", json.dumps(
        {"base": base, "clients": clients, "seconds": seconds, "plan": plan})], capture_output=True, text=True,
        cwd=ROOT, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def ceiling(run, slots: int, seconds: float = 3.0) -> float:
    """Images/s when `slots` threads call `run()` (a batch; returns its image count) back to back: the most
    forwards the API's runs at once can do, with no HTTP, JSON or Python of its own around them."""
    counts = [0] * slots
    end = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < end:
            counts[i] += run()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(slots)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def metric(client: httpx.Client, name: str, label: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{figure="{label}"}}'):
            return float(line.split()[-1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--block", type=int, default=5, help="calls of one side before the other takes its turn")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--load-client", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_client:
        spec = json.loads(args.load_client)
        print(json.dumps(asyncio.run(load(spec["base"], spec["clients"], spec["seconds"], spec["plan"]))))
        return
    settings = Settings()
    store = ModelStore(settings.data_dir)
    record = store.get(BUILTIN_ID)
    rt = runtimes.Runtimes(store, settings).get(record)  # the API's thread count, no batcher: the bare floor

    import skimage.data
    from PIL import Image

    photo = Image.fromarray(skimage.data.chelsea())
    x = preprocessing.to_tensor(preprocessing.fit(photo, record), record)
    bare_call = lambda: rt.logits(x)  # noqa: E731
    bare = median_ms(bare_call, args.repeat)
    batch = settings.occlusion_batch
    xb = np.repeat(x, batch, axis=0)
    untuned = runtimes.Runtimes(store, settings.model_copy(update={"forward_batch_tune": False})).get(record)
    per_image_untuned = median_ms(lambda: untuned.logits(xb), max(3, args.repeat // 5)) / batch
    rows_tuned = rt.batch_rows("plain", rt.plain, [record.logits_name], x)  # measured at the first bare forward
    per_image_batched = median_ms(lambda: rt.logits(xb), max(3, args.repeat // 5)) / batch
    slots = runtimes.run_slots(settings)
    x_rows = np.repeat(x, rows_tuned, axis=0)
    most = ceiling(lambda: len(rt.logits(x_rows)), slots)
    names = [layer.name for layer in record.layers]
    layers = {"early": names[len(names) // 6], "middle": names[len(names) // 2], "last": names[-1]}

    port = free_port()
    env = {**os.environ, "CONVSCOPE_PORT": str(port), "CONVSCOPE_LOG_LEVEL": "WARNING",
           "CONVSCOPE_REDIS_PREFIX": f"bench-forward-{port}:"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                               "--port", str(port), "--log-level", "warning", "--no-access-log"], cwd=ROOT, env=env)
    rows = []  # (what, ms, bare ms timed beside it)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        with httpx.Client(base_url=base, timeout=120) as client:
            def upload(data: bytes) -> str:
                return client.post("/v1/images", files={"file": ("v.png", data, "image/png")}).json()["id"]

            buf = io.BytesIO()
            photo.save(buf, format="PNG")
            image_id = upload(buf.getvalue())
            url = f"/v1/models/{BUILTIN_ID}"
            cold_ids = iter([upload(v) for v in variants(photo, 2 * args.repeat + 2, 1)])
            lean = Lean(port)

            def call(view, body, image=None):
                status, answer = lean.post(f"{url}/{view}", {"image": {"id": image or image_id}, **body})
                assert status == 200, answer[:500]
                return answer

            def row(what, fn):
                rows.append((what, *alternate_ms((fn, bare_call), args.repeat, args.block)))

            row("predict over HTTP (image seen before)", lambda: call("predict", {}))
            row("predict over HTTP (new image)", lambda: call("predict", {}, next(cold_ids)))
            for where, layer in layers.items():
                for fmt in ("png", "json"):
                    row(f"activations {fmt.upper()} {where} ({layer})",
                        lambda layer=layer, fmt=fmt: call("activations", {"layer": layer, "format": fmt}))
            call("occlusion", {"patch": 32, "stride": 8, "format": "json"})  # warm
            occ, floors = [], []
            for _ in range(2):  # each occlusion between two measures of the batched floor
                floors.append(median_ms(lambda: rt.logits(xb), 3) / batch)
                start = time.perf_counter()
                call("occlusion", {"patch": 32, "stride": 8, "format": "json"})
                occ.append((time.perf_counter() - start) * 1000)
            floors.append(median_ms(lambda: rt.logits(xb), 3) / batch)
            passes = len(forward.occlusion_positions(224, 32, 8)) ** 2 + 1

            # The load test: one client (sequential), then `clients` at once, the same mix and duration.
            needed = int(args.seconds * 250 * 0.1) + 50  # per phase: new images for the 10 % at up to 250 req/s
            fresh = [upload(v) for v in variants(photo, 2 * needed, 2)]
            plan = {"seen": image_id, "layer": layers["middle"], "fresh": fresh[:needed]}
            sequential = run_load(base, 1, args.seconds, plan)
            before = {f: metric(client, "convscope_forward_batches", f) for f in ("batches", "requests")}
            loaded = run_load(base, args.clients, args.seconds, {**plan, "fresh": fresh[needed:]})
            after = {f: metric(client, "convscope_forward_batches", f) for f in ("batches", "requests")}
    finally:
        server.terminate()
        server.wait()
        delete_run(settings.redis_url, env["CONVSCOPE_REDIS_PREFIX"])  # some 2000 photos: over 500 MB, not left to expire

    print(f"built-in model {BUILTIN_ID}, 224×224, ONNX Runtime CPU, intra threads "
          f"{runtimes.ort_threads(settings.ort_intra_threads)} ({os.cpu_count()} cores here), runs at once "
          f"{runtimes.run_slots(settings)}, forward_batch_max {settings.forward_batch_max}, forward_batch_wait_ms "
          f"{settings.forward_batch_wait_ms}, spinning {settings.ort_allow_spinning}, median of {args.repeat}, "
          f"alternating in blocks of {args.block}")
    print(f"{'what':58} {'ms':>8} {'bare ms':>8} {'× bare':>7}")
    print(f"{'bare ORT forward (batch 1)':58} {bare:8.1f} {bare:8.1f} {1:7.2f}")
    print(f"{f'ORT forward per image, one run of {batch}':58} {per_image_untuned:8.1f} {bare:8.1f} "
          f"{per_image_untuned / bare:7.2f}")
    print(f"{f'ORT forward per image, {batch} in runs of {rows_tuned} (measured best)':58} {per_image_batched:8.1f} "
          f"{bare:8.1f} {per_image_batched / bare:7.2f}")
    for name, ms, beside in rows:
        print(f"{name:58} {ms:8.1f} {beside:8.1f} {ms / beside:7.2f}")
    ratios = [o / (passes * (f0 + f1) / 2) for o, f0, f1 in zip(occ, floors, floors[1:])]
    print(f"occlusion patch 32 stride 8: {', '.join(f'{o:.0f}' for o in occ)} ms, {passes} forward passes; time / "
          f"(passes × batched per-image floor measured before and after it, "
          f"{', '.join(f'{f:.1f}' for f in floors)} ms) = {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"\nload on loopback, mix {', '.join(f'{k} {w:.0%}' for k, w in MIX)}, {args.seconds:.0f} s each")
    print(f"{'clients':>8} {'req/s':>7} {'ok':>6} {'503':>5} {'429':>5} {'other':>6}  p50/p99 ms per kind")
    for result in (sequential, loaded):
        kinds = "  ".join(f"{k} {v['p50']:.0f}/{v['p99']:.0f}" for k, v in result["kinds"].items())
        print(f"{result['clients']:>8} {result['rps']:7.1f} {result['ok']:>6} {result['503']:>5} {result['429']:>5} "
              f"{result['other']:>6}  {kinds}")
    print(f"forward ceiling: {most:.1f} images/s ({slots} runs of {rows_tuned} at once, bare ORT, 3 s), "
          f"{most / sequential['rps']:.2f}× the one-client requests/s: about what this machine allows the load test")
    print(f"{args.clients} clients / 1 client: {loaded['rps'] / sequential['rps']:.2f}× the requests/s; "
          f"5xx/429 without Retry-After: {loaded['no_retry_after']}; batches under load: "
          f"{after['batches'] - before['batches']:.0f} for {after['requests'] - before['requests']:.0f} requests")

if __name__ == "__main__":
    main()
