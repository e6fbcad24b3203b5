"""Units of a layer on the built-in model: neuron groups for 3 photos × 3 layers, and circuits for 50 units.

Groups: `neuron_groups` called directly (no queue) on each photo and layer, its activations from ONNX Runtime as the
worker gets them (each layer's session built before timing); the time of the whole method and of its factorisation
alone (activations + NMF), the NMF's iterations and the explained fraction. Icons use `--steps` and `--size` (small
by default: the bench is about the factorisation; an icon costs what an atlas icon costs, see bench/atlas.py).

Circuits: `GET /v1/models/{model}/layers/{layer}/units/{channel}/circuit?k=8` through the real app (FastAPI's test
client, in this process, real Redis): the first answer (the model's weights loaded and probed once), the first of
each layer (its walk planned), then every unit again warm, 50 units over 10 layers from the stem to the head; the
target is ≤ 50 ms warm. Usage: python -m bench.units [--steps 16] [--size 48]
"""

# ruff: noqa: E402 (the project's imports follow the sys.path line that makes them importable)
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cleanup import delete_run
from bench.results import load_average, record
from core.kinds.atlas import NeuronGroupsParams
from core.methods import ImageInput
from core.settings import Settings
from core.stores.models import ModelStore
from models.builtin import BUILTIN_ID
from models.runtimes import Runtimes
from workers.methods.atlas import neuron_groups
from workers.methods.task import Task, TensorImage
from workers.networks import load_network

PHOTOS = ["chelsea", "coffee", "astronaut"]
GROUP_LAYERS = ["_blocks.3._relu0", "_blocks.8._relu1", "_blocks.13._relu0"]
CIRCUIT_LAYERS = ["_relu0", "_blocks.1._bn2", "_blocks.2", "_blocks.4._relu1", "_blocks.6._bn0", "_blocks.9",
                  "_blocks.10._relu1", "_blocks.12", "_blocks.15._bn2", "_relu1"]


def photo_input(record, name: str) -> ImageInput:
    import skimage.data
    from PIL import Image

    from core import preprocessing

    pixels = getattr(skimage.data, name)()[..., :3]
    fitted = preprocessing.fit(Image.fromarray(pixels), record)
    return ImageInput(pixels, np.asarray(fitted), preprocessing.to_tensor(fitted, record))


def groups(store: ModelStore, settings: Settings, steps: int, size: int) -> list[str]:
    record = store.get(BUILTIN_ID)
    network = load_network(record, store, torch.device("cpu"))
    runtime = Runtimes(store, settings).get(record)
    lines = [f"neuron_groups: 6 groups, icons {steps} steps at {size} px, batch 6, torch/ORT threads "
             f"{torch.get_num_threads()}/{settings.ort_intra_threads}"]
    first = photo_input(record, PHOTOS[0]).x
    for layer in GROUP_LAYERS:  # warm-up, not timed: each layer's ONNX Runtime session is built on first use
        runtime.layer(first, layer)
    for photo in PHOTOS:
        image = TensorImage.of(photo_input(record, photo), "cpu")
        for layer in GROUP_LAYERS:
            params = NeuronGroupsParams(layer=layer, steps=steps, size=size, batch=6).resolve(record)
            task = Task(network=network, x=image.x, params=params, inputs={"image": image}, model=runtime)
            start = time.perf_counter()
            acts = neuron_groups.layer_activations(task, layer)
            _, _, iterations = neuron_groups.factorise(neuron_groups.positions(acts), params.groups, 0, params.max_iter)
            nmf = time.perf_counter() - start
            start = time.perf_counter()
            out = neuron_groups.run(task)
            whole = time.perf_counter() - start
            lines.append(f"  {photo:9s} {layer:18s} {'×'.join(map(str, acts.shape)):>11s}  factorise {nmf * 1000:7.1f} ms "
                         f"({iterations:4d} it)  whole {whole:6.2f} s  explained {out.metrics['explained']:.3f}  "
                         f"top share {max(g['share'] for g in out.tables['groups']):.3f}")
            print(lines[-1], flush=True)
    return lines


def circuits(settings: Settings, units: int = 50) -> list[str]:
    from fastapi.testclient import TestClient

    from service.app import create_app

    picks = [(layer, channel) for channel in (0, 3, 7, 11, 15) for layer in CIRCUIT_LAYERS][:units]
    times: dict[tuple[str, int], float] = {}
    firsts: dict[str, float] = {}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        def get(layer: str, channel: int) -> float:
            url = f"/v1/models/{BUILTIN_ID}/layers/{quote(layer, safe='')}/units/{channel}/circuit?k=8"
            start = time.perf_counter()
            answer = client.get(url)
            elapsed = time.perf_counter() - start
            assert answer.status_code == 200, answer.text
            return elapsed

        cold = get(*picks[0])
        firsts[picks[0][0]] = cold
        for layer, channel in picks[1:]:
            seconds = get(layer, channel)
            firsts.setdefault(layer, seconds)
        for _ in range(3):
            for pick in picks:
                times.setdefault(pick, []).append(get(*pick))
    warm = [statistics.median(t) * 1000 for t in times.values()]
    p95 = float(np.percentile(warm, 95))
    planned = [seconds * 1000 for seconds in list(firsts.values())[1:]]
    lines = [f"circuit: {len(picks)} units over {len(CIRCUIT_LAYERS)} layers, k 8, JSON, through the app (test client)",
             f"  first answer (weights loaded and probed): {cold * 1000:.1f} ms",
             f"  first of each other layer (walk planned): median {statistics.median(planned):.1f} ms, "
             f"max {max(planned):.1f} ms",
             f"  warm (median of 3 per unit): median {statistics.median(warm):.2f} ms, p95 {p95:.2f} ms, "
             f"max {max(warm):.2f} ms (target ≤ 50 ms: {'met' if max(warm) <= 50 else 'missed'})"]
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--size", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prefix = f"bench-units-{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_prefix=prefix, data_dir=ROOT / "var", ort_intra_threads=1)
    store = ModelStore(settings.data_dir)
    before = load_average(all_three=True)
    try:
        lines = circuits(settings) + groups(store, settings, args.steps, args.size)
        lines.append(f"load average (1, 5, 15 min) before {before}, after {load_average(all_three=True)}: the "
                     "machine's other work, shared with these figures")
    finally:
        delete_run(settings.redis_url, prefix)
    record("bench/units.py: neuron groups and circuits on the built-in model", lines)


if __name__ == "__main__":
    main()
