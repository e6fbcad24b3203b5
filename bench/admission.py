"""How many forward views admission lets run at once, against 32 clients: throughput and p99 of predict and activations
for each `max_concurrent_requests`, against the old default (16) measured in the same run.

    python -m bench.admission [--values 16,8,4,2] [--rounds 2] [--seconds 8] [--no-record]

For each value, in turn and `--rounds` times (so that a machine whose speed drifts weighs on every value alike), the
API is started as `scripts/run.sh` starts it (`bench.serve.start_server`) with that value, warmed with 32 clients of
each view, then measured: 32 closed-loop clients of activations (JSON of the middle layer) and of predict, each for
`--seconds`. Each value's figures are the medians over its rounds; `× 16` is its requests/s over those of 16.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
from pathlib import Path

import httpx
import skimage.data
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.cleanup import delete_run  # noqa: E402
from bench.results import load_average  # noqa: E402
from bench.serve import start_server, sweep_level  # noqa: E402
from bench.timing import wait_ready  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402

BASELINE = 16
CLIENTS = 32


def measure(settings: Settings, value: int, layer: str, seconds: float) -> dict[str, tuple[float, float]]:
    """{view: (requests/s, p99 ms)} with `max_concurrent_requests` = `value`, after a warm-up of each view."""
    server, port, env = start_server(settings, CONVSCOPE_MAX_CONCURRENT_REQUESTS=str(value))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        buf = io.BytesIO()
        Image.fromarray(skimage.data.chelsea()).save(buf, format="PNG")
        with httpx.Client(base_url=base, timeout=60) as client:
            image = client.post("/v1/images", files={"file": ("c.png", buf.getvalue(), "image/png")}).json()["id"]
        bodies = {"activations": {"image": {"id": image}, "layer": layer, "format": "json"},
                  "predict": {"image": {"id": image}}}
        figures = {}
        for view, body in bodies.items():
            path, raw = f"/v1/models/{BUILTIN_ID}/{view}", json.dumps(body).encode()
            asyncio.run(sweep_level(port, path, raw, CLIENTS, 3.0, 0.0))  # warm: the layer's session, batch sizes
            row = asyncio.run(sweep_level(port, path, raw, CLIENTS, seconds, 1.0))
            figures[view] = (row["rps"], row["p99"])
        return figures
    finally:
        server.terminate()
        server.wait()
        delete_run(settings.redis_url, env["CONVSCOPE_REDIS_PREFIX"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", default="16,8,4,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    values = [int(v) for v in args.values.split(",")]
    if BASELINE not in values:
        values.insert(0, BASELINE)
    settings = Settings()
    names = [layer.name for layer in ModelStore(settings.data_dir).get(BUILTIN_ID).layers]
    layer = names[len(names) // 2]
    load_before = load_average()
    runs: dict[int, list[dict]] = {v: [] for v in values}
    for _ in range(args.rounds):
        for value in values:
            runs[value].append(measure(settings, value, layer, args.seconds))

    def median(value: int, view: str, i: int) -> float:
        return statistics.median(run[view][i] for run in runs[value])

    lines = [f"built-in model {BUILTIN_ID}; {CLIENTS} closed-loop clients; activations: JSON of {layer}; windows of "
             f"{args.seconds:g} s after warm-up; medians of {args.rounds} rounds; load average before {load_before}, "
             f"after {load_average()}", "",
             f"{'admitted':>8} {'activations req/s':>18} {'× 16':>6} {'p99 ms':>7} {'predict req/s':>14} {'× 16':>6} "
             f"{'p99 ms':>7}"]
    for value in values:
        cells = []
        for view in ("activations", "predict"):
            rate = median(value, view, 0)
            cells.append(f"{rate:{18 if view == 'activations' else 14}.1f} {rate / median(BASELINE, view, 0):6.2f} "
                         f"{median(value, view, 1):7.0f}")
        lines.append(f"{value:>8} {' '.join(cells)}")
    print("\n".join(lines))
    if not args.no_record:
        results.record("Forward views admitted at once, 32 clients: bench/admission.py", lines)


if __name__ == "__main__":
    main()
