"""A perf_analyzer-style sweep of the forward views, next to the bare ONNX Runtime ceiling measured in the same run.

For predict, activations (JSON statistics of a middle layer) and occlusion (patch 112, stride 56: ten forward passes,
so that 32 clients finish within a window), at each concurrency of `--levels` (1, 2, 4, 8, 16, 32): closed-loop
clients on keep-alive HTTP/1.1 connections (each sends its next request when the last is answered) for a warm-up,
then a window of `--seconds`; the requests that end in the window count: requests/s, p50/p90/p95/p99 latency, and
the server's own split read from each answer's `Server-Timing` (`queue`, `compute` = decode + forward + encode,
`other` = the rest of its `total` in the API: routing, checks, hops to a thread and back; and `outside` = the
client's wait less that `total`: the network, the HTTP server and the client; medians), so that waiting is told
from computing and server time from the client and network.

The ceiling: the API's forward runs at once (`forward_batch_instances`; one per core), each run back to back in bare
ONNX Runtime with the API's thread settings (no HTTP, JSON or Python around them), or one run at a time with ONNX
Runtime's default spinning pool, in this process, the best of 1, 2 and 4 images per run and the batch size measured
here, before and after the sweep (both printed). For occlusion, images/s over its passes. A shared VM's speed drifts
by more than the gaps this bench is for, so every ratio is taken against bare work done at the same time: each
level's requests/s against the ceiling's best way measured just before and just after its window, and one client's
latency against one bare forward (what a request costs at the least: ONNX Runtime's defaults, whose pool threads
spin) called in turns with its requests; for predict, a bare FastAPI app's predict (`bench.floor`: one route, the
same forward on a thread, nothing of the service's own) takes its turn too, so that what the service adds is told from
what any Python web app that hops to a thread adds on this machine. The API process's CPU per request (its event
loop's and all of it) stands beside the ceiling's.

Without `--url`, the service is started as `scripts/run.sh` starts it (`python -m service.cli serve`, with the data
dir already set up; no workers, the sweep needs none) on a spare port, under a Redis key prefix of its own deleted
at the end. From that cold start it also measures: the time until `/readyz` is 200, the first predict after it (a new
image) against warm predicts of new images, the first activations of a layer against warm ones, and 32 clients of
predict started at once on the barely used server (the start-of-load tail: p99 over p50).

Writes its figures to bench/RESULTS.md (`bench/results.py`: date, command, commit and machine) unless `--no-record`.

Usage: python -m bench.serve [--url http://127.0.0.1:8000] [--seconds 5] [--warmup 1] [--levels 1,2,4,8,16,32]
                             [--views predict,activations,occlusion] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.cleanup import delete_run  # noqa: E402
from bench.floor import bare_builtin  # noqa: E402
from bench.forward import _post, ceiling, variants  # noqa: E402
from bench.results import load_average  # noqa: E402
from bench.timing import (  # noqa: E402
    Lean,
    alternate_ms,
    beyond_phases,
    cpu_seconds,
    free_port,
    pct,
    server_timing,
    wait_ready,
)
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models import forward, runtimes  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402

OCCLUSION = {"patch": 112, "stride": 56, "format": "json"}
SETTLE_S = 5  # s after a layer's first request: its sub-graph session built and its batch size measured
NEAR_S = 1.0  # s of the ceiling's best way measured before and after each level's window


async def sweep_level(port: int, path: str, body: bytes, clients: int, seconds: float, warmup: float,
                      pid: int | None = None) -> dict:
    """`clients` closed-loop clients for `warmup` + `seconds`; figures of the requests that ended in the window, and
    with the API's `pid`, the CPU time it used in the window (`cpu_seconds`: its event loop's and all of it)."""
    begin = time.perf_counter() + warmup
    end = begin + seconds
    done: list[tuple[float, float, int, dict]] = []  # (start, end, status, server phases)
    used: list[tuple[float, float]] = []

    async def watch() -> None:
        for moment in (begin, end):
            await asyncio.sleep(max(0.0, moment - time.perf_counter()))
            used.append(cpu_seconds(pid) if pid is not None else (float("nan"), float("nan")))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (start := time.perf_counter()) < end:
                status, headers = await _post(reader, writer, path, body)
                done.append((start, time.perf_counter(), status, server_timing(headers.get("server-timing"))))
                if status in (429, 503):
                    await asyncio.sleep(float(headers.get("retry-after", 1)))
        finally:
            writer.close()

    await asyncio.gather(watch(), *(client() for _ in range(clients)))
    window = [d for d in done if begin <= d[1] <= end]
    ok = [d for d in window if d[2] == 200]
    latency = [(e - s) * 1000 for s, e, _, _ in ok]
    queue = [p.get("queue", 0.0) for *_, p in ok]
    compute = [p.get("decode", 0.0) + p.get("forward", 0.0) + p.get("encode", 0.0) for *_, p in ok]
    beyond = [split for ms, (*_, p) in zip(latency, ok, strict=True) if (split := beyond_phases(ms, p))]
    return {"clients": clients, "rps": len(ok) / seconds, "ok": len(ok), "errors": len(window) - len(ok),
            "p50": pct(latency, 50), "p90": pct(latency, 90), "p95": pct(latency, 95), "p99": pct(latency, 99),
            "queue": pct(queue, 50), "compute": pct(compute, 50), "other": pct([o for o, _ in beyond], 50),
            "outside": pct([o for _, o in beyond], 50), "loop": 1000 * (used[1][0] - used[0][0]) / max(1, len(ok)),
            "cpu": 1000 * (used[1][1] - used[0][1]) / max(1, len(ok))}


class Bare:
    """The views' work in bare ONNX Runtime in this process: the API's thread count and batch sizes, no batcher."""

    def __init__(self, settings: Settings, layer: str):
        store, self.record, self.spinning, self.photo, self.x = bare_builtin(settings)
        self.rt = runtimes.Runtimes(store, settings).get(self.record)  # the sessions the API runs side by side
        self.layer = layer
        self.target = int(np.argmax(self.rt.logits(self.x)[0]))
        self.passes = len(forward.occlusion_positions(224, OCCLUSION["patch"], OCCLUSION["stride"])) ** 2 + 1
        self.rows = {"predict": self.rt.measure("plain", self.rt.plain, [self.record.logits_name], self.x)}
        session, variant = self.rt.upto(layer)
        self.rows["activations"] = self.rt.measure(variant, session, [layer], self.x)
        self.rows["occlusion"] = self.rows["predict"]

    def call(self, view: str) -> Callable[[], object]:
        """One request's forward work, bare, with ONNX Runtime's defaults (pool threads that spin)."""
        rt = self.spinning
        return {"predict": lambda: rt.logits(self.x), "activations": lambda: rt.layer(self.x, self.layer),
                "occlusion": lambda: forward.occlusion(rt, self.x, self.target, OCCLUSION["patch"],
                                                       OCCLUSION["stride"], "mean", 32)}[view]

    def runs(self) -> dict[str, tuple[runtimes.ModelRuntime, int]]:
        """The ways the ceiling runs: the API's runs at once (its sleeping pools), or one spinning run at a time."""
        slots = runtimes.run_slots(self.rt.settings)
        return {f"{slots} at once": (self.rt, slots), "1 spinning": (self.spinning, 1)}

    def rate(self, view: str, rows: int, how: str, seconds: float) -> tuple[float, float]:
        """(requests/s, CPU ms per request of this process) with `rows` images per run, run `how` (`runs`) back to
        back for `seconds` (for occlusion, images/s over its passes)."""
        rt, slots = self.runs()[how]
        xs = np.repeat(self.x, rows, axis=0)
        start, cpu = time.perf_counter(), time.process_time()
        if view == "activations":
            rate = ceiling(lambda: len(rt.layer(xs, self.layer)), slots, seconds)
        else:
            rate = ceiling(lambda: len(rt.logits(xs)), slots, seconds)
            rate = rate / self.passes if view == "occlusion" else rate
        return rate, 1000 * (time.process_time() - cpu) / max(1e-9, rate * (time.perf_counter() - start))

    def ceiling(self, view: str, seconds: float = 1.5) -> tuple[float, int, str, float]:
        """Requests/s at most, the images per run, the runs that gave it and their CPU ms per request (this process's,
        all threads): the API's runs at once, back to back, or
        one run at a time on a spinning pool (for occlusion, images/s over its passes), the best of 1, 2 and 4 images
        per run and the size measured here. The best, not the measured size's alone: a size measured on a busy
        machine may not be the cheapest, and the API measures its own."""
        best = (0.0, 0, "", float("nan"))
        for how in self.runs():
            for rows in sorted({1, 2, 4, self.rows[view]}):
                rate, cpu_ms = self.rate(view, rows, how, seconds)
                best = max(best, (rate, rows, how, cpu_ms))
        return best


def sweep(bare: Bare, best: tuple, port: int, path: str, body: bytes, levels: list[int], seconds: float,
          warmup: float, pid: int | None) -> list[dict]:
    """`sweep_level` at each level, with the ceiling's best way (`best`: rate, rows, how) measured for `NEAR_S`
    before the first window and after each: a row's `near` is the mean of the two around its window, so that each
    level is weighed against the machine's speed at that time (it drifts on a shared VM)."""
    _, rows, how, _ = best
    view = path.rsplit("/", 1)[-1]
    near = [bare.rate(view, rows, how, NEAR_S)[0]]
    table = []
    for n in levels:
        table.append(asyncio.run(sweep_level(port, path, body, n, seconds, warmup, pid)))
        near.append(bare.rate(view, rows, how, NEAR_S)[0])
        table[-1]["near"] = (near[-2] + near[-1]) / 2
    return table


def posting(client: Lean, path: str, body: dict) -> Callable[[], None]:
    """A call that posts `body` to `path` on `client`'s connection and expects 200."""
    def request() -> None:
        status, answer = client.post(path, body)
        assert status == 200, answer[:200]
    return request


def one_client_in_turns(bare: Bare, view: str, port: int, path: str, body: dict,
                        floor_port: int | None = None) -> tuple[float, float, int, int, float | None]:
    """(ms of one client's request, ms of one bare forward of the same work, calls of each, calls per turn, ms of the
    bare FastAPI app's predict or None): medians, called in turns (`alternate_ms`), the requests on a keep-alive
    connection, as the sweep's one client sends them. The bare app (`bench.floor`, on `floor_port`) takes its turn
    for predict when it runs."""
    repeats, block = (30, 5) if view != "occlusion" else (6, 2)
    clients = [Lean(port)] + ([Lean(floor_port)] if floor_port and view == "predict" else [])
    calls = [posting(clients[0], path, body), bare.call(view)] + [posting(c, "/predict", body) for c in clients[1:]]
    try:
        api_ms, bare_ms, *floor_ms = alternate_ms(calls, repeats, block)
        return api_ms, bare_ms, repeats, block, floor_ms[0] if floor_ms else None
    finally:
        for client in clients:
            client.close()


def start_floor(env: dict) -> tuple[subprocess.Popen, int]:
    """The bare FastAPI app (`bench.floor`) on a spare port, started as the API is: (process, port)."""
    port = free_port()
    floor = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.floor:create_app", "--factory", "--host",
                              "127.0.0.1", "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    return floor, port


def start_server(settings: Settings, **extra: str) -> tuple[subprocess.Popen, int, dict]:
    """The API as scripts/run.sh serves it, on a spare port and a key prefix of its own, with the `extra` variables
    (`CONVSCOPE_*` settings); (process, port, env)."""
    port = free_port()
    env = {**os.environ, "CONVSCOPE_PORT": str(port), "CONVSCOPE_LOG_LEVEL": "WARNING",
           "CONVSCOPE_REDIS_PREFIX": f"bench-serve-{port}:", **extra}
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env=env)
    return server, port, env


def one_request(port: int, path: str, body: dict) -> tuple[float, dict]:
    """(ms at the client, Server-Timing phases) of one POST on a fresh keep-alive connection."""
    async def call():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            start = time.perf_counter()
            status, headers = await _post(reader, writer, path, json.dumps(body).encode())
            took = (time.perf_counter() - start) * 1000
        finally:
            writer.close()
        assert status == 200, status
        return took, server_timing(headers.get("server-timing"))
    return asyncio.run(call())


def cold_start(port: int, client: httpx.Client, photo, layer: str, url: str, bare_forward: Callable[[], object],
               lines: list[str]) -> None:
    """First predict (a new image) and first activations of a layer, each against warm ones; the warm ones are timed
    once the layer's own sub-graph session is built and measured (in the background, `SETTLE_S`), as a user calling
    again finds it (not beside that build). First and warm ones alike go on a fresh connection each. The warm
    activations also stand against one bare forward of the whole model, the two called in turns (`alternate_ms`), so
    that the machine's drifting speed falls on both, the requests then on one keep-alive connection, as the sweep's
    one client sends them: a fresh connection and client loop per request would count the client's set-up too."""
    def upload(data: bytes) -> str:
        return client.post("/v1/images", files={"file": ("v.png", data, "image/png")}).json()["id"]

    def split(phases: dict) -> str:
        return ", ".join(f"{name} {ms:.1f}" for name, ms in phases.items())

    fresh = [upload(v) for v in variants(photo, 7, 3)]
    activations = {"image": {"id": fresh[0]}, "layer": layer, "format": "png"}
    first_predict = one_request(port, f"{url}/predict", {"image": {"id": fresh[0]}})
    first_layer = one_request(port, f"{url}/activations", activations)
    time.sleep(SETTLE_S)  # not beside the layer's session being built
    warm_predicts = [one_request(port, f"{url}/predict", {"image": {"id": i}}) for i in fresh[1:6]]
    warm_layers = [one_request(port, f"{url}/activations", activations) for _ in range(20)]
    warm_predict = statistics.median(ms for ms, _ in warm_predicts)
    warm_layer = statistics.median(ms for ms, _ in warm_layers)
    keep = Lean(port)  # as a client that calls again keeps its connection: no connect or client set-up timed
    try:
        png_ms, bare_ms = alternate_ms((posting(keep, f"{url}/activations", activations), bare_forward), 20, 5)
    finally:
        keep.close()
    lines.append(f"first predict after ready (new image) {first_predict[0]:.1f} ms [{split(first_predict[1])}], warm "
                 f"(new images, median of 5) {warm_predict:.1f} ms: {first_predict[0] / warm_predict:.2f}×")
    lines.append(f"first activations PNG of {layer} {first_layer[0]:.1f} ms [{split(first_layer[1])}], warm (median "
                 f"of 20, {SETTLE_S:g} s later) {warm_layer:.1f} ms [last: {split(warm_layers[-1][1])}]: "
                 f"{first_layer[0] / warm_layer:.2f}×; the warm PNG on a keep-alive connection against one bare "
                 f"forward of the whole model, in turns (blocks of 5, medians of 20): {png_ms:.1f} against {bare_ms:.1f} ms, "
                 f"{png_ms / bare_ms:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=None, help="a running service (else one is started, and its cold start timed)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each window")
    parser.add_argument("--levels", default="1,2,4,8,16,32")
    parser.add_argument("--views", default="predict,activations,occlusion")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    views = args.views.split(",")
    settings = Settings()
    names = [layer.name for layer in ModelStore(settings.data_dir).get(BUILTIN_ID).layers]
    layer = names[len(names) // 2]
    load_before = load_average()
    bare = Bare(settings, layer)
    ceilings = {view: [bare.ceiling(view)] for view in views}
    lines: list[str] = []
    server = env = None
    try:
        if args.url is None:
            server, port, env = start_server(settings)
            base = f"http://127.0.0.1:{port}"
        else:
            base, port = args.url.rstrip("/"), int(args.url.rsplit(":", 1)[1].strip("/"))
        with httpx.Client(base_url=base, timeout=120) as client:
            if server is not None:
                alive, ready = wait_ready(base)
                lines.append(f"cold start: /healthz answered and /readyz 503 after {alive:.2f} s, /readyz 200 after "
                             f"{ready:.2f} s (process start to ready; the built-in model's session built and measured)")
            buf = io.BytesIO()
            bare.photo.save(buf, format="PNG")
            image_id = client.post("/v1/images", files={"file": ("c.png", buf.getvalue(), "image/png")}).json()["id"]
            url = f"/v1/models/{BUILTIN_ID}"
            bodies = {"predict": {"image": {"id": image_id}},
                      "activations": {"image": {"id": image_id}, "layer": layer, "format": "json"},
                      "occlusion": {"image": {"id": image_id}, **OCCLUSION}}
            if server is not None:
                cold_start(port, client, bare.photo, layer, url, bare.call("predict"), lines)
                tail = asyncio.run(sweep_level(port, f"{url}/predict", json.dumps(bodies["predict"]).encode(), 32,
                                               args.seconds, 0.0))
                lines.append(f"32 clients of predict from a barely used server, no warm-up, {args.seconds:g} s: "
                             f"{tail['rps']:.1f} req/s, p50 {tail['p50']:.0f} ms, p99 {tail['p99']:.0f} ms, "
                             f"p99/p50 {tail['p99'] / tail['p50']:.2f}, errors {tail['errors']}")
            table = {view: sweep(bare, ceilings[view][0], port, f"{url}/{view}", json.dumps(bodies[view]).encode(),
                                 levels, args.seconds, args.warmup, server and server.pid) for view in views}
            floor, floor_port = start_floor(env or dict(os.environ)) if "predict" in views else (None, None)
            try:
                if floor is not None:
                    wait_ready(f"http://127.0.0.1:{floor_port}")
                turns = {view: one_client_in_turns(bare, view, port, f"{url}/{view}", bodies[view], floor_port)
                         for view in views}
            finally:
                if floor is not None:
                    floor.terminate()
                    floor.wait()
    finally:
        if server is not None:
            server.terminate()
            server.wait()
            delete_run(settings.redis_url, env["CONVSCOPE_REDIS_PREFIX"])
    for view in views:
        ceilings[view].append(bare.ceiling(view))
    load_after = load_average()

    head = (f"built-in model {BUILTIN_ID} 224×224, ONNX Runtime CPU, intra threads "
            f"{runtimes.ort_threads(settings.ort_intra_threads)}, runs at once {runtimes.run_slots(settings)}; "
            f"activations: JSON of {layer}; occlusion: patch {OCCLUSION['patch']} stride {OCCLUSION['stride']} "
            f"({bare.passes} passes); windows of {args.seconds:g} s after {args.warmup:g} s of warm-up; load average "
            f"before {load_before}, after {load_after} (other work on this machine)")
    out = [head, *lines, ""]
    out.append(f"{'view':12} {'clients':>7} {'req/s':>7} {'× ceil':>7} {'p50':>7} {'p90':>7} {'p95':>7} {'p99':>7} "
               f"{'p99/p50':>7} {'queue':>7} {'compute':>7} {'other':>7} {'outside':>7} {'loop':>6} {'cpu':>6} {'errors':>6}")
    for view in views:
        most = statistics.mean(rate for rate, *_ in ceilings[view])
        for row in table[view]:
            out.append(f"{view:12} {row['clients']:>7} {row['rps']:7.1f} {row['rps'] / row['near']:7.2f} {row['p50']:7.1f} "
                       f"{row['p90']:7.1f} {row['p95']:7.1f} {row['p99']:7.1f} {row['p99'] / row['p50']:7.2f} "
                       f"{row['queue']:7.1f} {row['compute']:7.1f} {row['other']:7.1f} {row['outside']:7.1f} "
                       f"{row['loop']:6.2f} {row['cpu']:6.2f} {row['errors']:>6}")
        api_ms, bare_ms, repeats, block, floor_ms = turns[view]
        beside = ("" if floor_ms is None else f"; a bare FastAPI app's predict in the same turns (bench/floor.py) "
                  f"{floor_ms:.1f} ms, {floor_ms / bare_ms:.2f}×: the service adds {api_ms - floor_ms:.1f} ms to it")
        out.append(f"{view:12} bare ORT: one client in turns with one request's bare forward (blocks of {block}, "
                   f"medians of {repeats}): {api_ms:.1f} against {bare_ms:.1f} ms, "
                   f"{api_ms / bare_ms:.2f}×{beside}; "
                   f"ceiling {most:.1f} req/s (before {ceilings[view][0][0]:.1f} "
                   f"with {ceilings[view][0][1]} images per run, {ceilings[view][0][2]}, after "
                   f"{ceilings[view][1][0]:.1f} with {ceilings[view][1][1]}, {ceilings[view][1][2]}; best of 1, 2, 4 "
                   f"and the {bare.rows[view]} measured here, runs side by side or one spinning; CPU "
                   f"{statistics.mean(cpu for *_, cpu in ceilings[view]):.2f} ms per request)")
    out.append("latency ms at the client; queue, compute and other: medians of the server's Server-Timing (compute = "
               "decode + forward + encode, other = total less the phases); outside: the client's wait less the "
               "server's total; × ceil: req/s over the ceiling's best way (found before the sweep) measured for "
               f"{NEAR_S:g} s just before and after that level's window (their mean); loop and cpu: CPU ms per request the API "
               "process used in the window, its event loop's (main thread) and all of it (the ceiling's for comparison)")
    print("\n".join(out))
    if not args.no_record:
        results.record("Forward views under load: bench/serve.py", out)


if __name__ == "__main__":
    main()
