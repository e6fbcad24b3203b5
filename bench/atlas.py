"""Atlases on the built-in model: speed against one feature visualization per channel, and the quality checks.

Speed: channels per minute of `layer_atlas` (icons optimised `--batch` at a time, the forward stopped at the
layer) against `feature_vis` called once per channel (what a client would get with one job per channel;
methods called directly, without the queue, so the ratio is the methods' own), same steps and size, in one
run. Quality (issue 15): for `--channels` channels of the middle layer (every n-th, to bound the time), the
share whose feature visualization, as its 8-bit PNG, gives the channel a mean activation ≥ 3× the largest
mean any of the bundled natural photos gives it; diversity variants of one channel against natural and
against `diversity` 1 runs with other seeds (mean pairwise Gram cosine); the activation atlas icons'
cosine with their cells' directions against the cells' own activations. Usage:
python bench/atlas.py [--steps 128] [--size 64] [--channels 48] [--batch 16]
"""

# ruff: noqa: E402 (the project's imports follow the sys.path line that makes them importable)
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import preprocessing
from core.kinds.atlas import LayerAtlasParams
from core.kinds.making import FeatureVisParams
from core.settings import Settings
from core.stores.models import ModelStore
from models.builtin import BUILTIN_ID
from workers.methods.atlas import layer_atlas
from workers.methods.making import feature_vis
from workers.methods.mechanics import icons, objectives
from workers.methods.task import Task
from workers.networks import load_network

PHOTOS = ROOT / "service" / "explorer" / "samples"  # the bundled sample photos (chelsea, coffee, astronaut, rocket)


def natural_means(network, layer: str) -> np.ndarray:
    """C: the largest mean activation any bundled photo gives each channel (photos fitted as the model sees them)."""
    record = network.record
    pixels = np.stack([np.asarray(preprocessing.fit(Image.open(p).convert("RGB"), record))
                       for p in sorted(PHOTOS.glob("*.jpg"))])
    return icons.activations(network, layer, pixels).mean(dim=(2, 3)).max(dim=0).values.numpy()


def speed(network, layer: str, channels: list[int], steps: int, size: int, batch: int) -> None:
    params = LayerAtlasParams(layer=layer, channels=channels, steps=steps, size=size, batch=batch)
    layer_atlas.run(Task(network, None, params.model_copy(update={"channels": channels[:2], "steps": 2})))  # warm-up
    start = time.perf_counter()
    layer_atlas.run(Task(network, None, params))
    atlas_s = time.perf_counter() - start
    start = time.perf_counter()
    for channel in channels:
        feature_vis.run(Task(network, None, FeatureVisParams(layer=layer, channel=channel, steps=steps, size=size,
                                                             preview_every=0)))
    single_s = time.perf_counter() - start
    per_min = lambda seconds: 60 * len(channels) / seconds  # noqa: E731
    print(f"speed, {len(channels)} channels of {layer}, {steps} steps at {size} px, batch {batch}:")
    print(f"  feature_vis one per channel  {single_s:7.1f} s  {per_min(single_s):7.1f} channels/min  (baseline)")
    print(f"  layer_atlas                  {atlas_s:7.1f} s  {per_min(atlas_s):7.1f} channels/min  "
          f"{single_s / atlas_s:5.2f}x")


def quality(network, layer: str, channels: list[int], steps: int, size: int, batch: int) -> None:
    natural = natural_means(network, layer)
    params = LayerAtlasParams(layer=layer, channels=channels, steps=steps, size=size, batch=batch)
    start = time.perf_counter()
    out = layer_atlas.run(Task(network, None, params))
    alive = [e for e in out.tables["atlas"] if natural[e["channel"]] > 0]
    ratios = np.array([e["objective"] / natural[e["channel"]] for e in alive])
    print(f"quality, {len(channels)} channels of {layer} ({len(alive)} that fire on a photo; "
          f"{time.perf_counter() - start:.0f} s):")
    print(f"  channel mean on its 8-bit icon / largest on a bundled photo: median {np.median(ratios):.2f}, "
          f"min {ratios.min():.2f}; ≥ 3x for {np.mean(ratios >= 3):.0%} of them (target ≥ 80 %)")


def diversity(network, layer: str, channel: int, steps: int, size: int, variants: int = 4) -> None:
    natural = natural_means(network, layer)[channel]
    common = {"layer": layer, "channels": [channel], "steps": steps, "size": size}
    out = layer_atlas.run(Task(network, None, LayerAtlasParams(**common, diversity=variants)))
    diverse = out.tables["atlas"][0]
    diverse_px = np.stack([out.pictures[name.removesuffix(".png")] for name in diverse["images"]])
    seeds_px = np.stack([layer_atlas.run(Task(network, None, LayerAtlasParams(**common, seed=s))).pictures[f"unit_{channel}"]
                         for s in range(variants)])

    def mean_gram_cosine(pixels: np.ndarray) -> float:
        sims = objectives.gram_cosines(icons.activations(network, layer, pixels)).numpy()
        return float((sims.sum() - np.trace(sims)) / (len(pixels) * (len(pixels) - 1)))

    ratios = [v / natural for v in diverse["objectives"]]
    print(f"diversity, channel {channel} of {layer}, {variants} variants:")
    print(f"  each variant / natural: {', '.join(f'{r:.2f}' for r in ratios)} (target each ≥ 2x)")
    print(f"  mean pairwise Gram cosine: diversity {variants}: {mean_gram_cosine(diverse_px):.3f}; "
          f"{variants} seeds without diversity: {mean_gram_cosine(seeds_px):.3f} (baseline)")


def cells(network, layer: str, steps: int, grid: int = 4, positions: int = 12) -> None:
    """An activation atlas of the bundled photos and scikit-image's: each icon's cosine with its cell's direction
    against the mean cosine of the cell's own activations."""
    import skimage.data

    from core.kinds.atlas import ActivationAtlasParams
    from core.methods import FeatureBatch
    from workers.methods.atlas import activation_atlas

    record = network.record
    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "page", "horse", "cat",
             "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "text", "clock"]
    photos = []
    for name in names:
        picture = np.asarray(getattr(skimage.data, name)())
        if picture.dtype != np.uint8:
            picture = (picture.astype(np.float64) / max(picture.max(), 1) * 255).astype(np.uint8)
        photos.append(np.asarray(preprocessing.fit(Image.fromarray(picture).convert("RGB"), record)))
    pixels = np.stack(photos)

    class Feed:  # the dataset as the runner's feed would give it, computed here with the torch model
        def __len__(self):
            return len(pixels)

        def batches(self, layers, extra_steps=0):
            acts = icons.activations(network, layers[0], pixels).numpy()
            yield FeatureBatch(np.arange(len(pixels)), pixels, {layers[0]: acts})

    params = ActivationAtlasParams(layer=layer, grid=grid, positions_per_image=positions, method="tsne", steps=steps)
    out = activation_atlas.run(Task(network, None, params, feed=Feed()))
    table = out.tables["cells"]
    closer = sum(c["icon_cosine"] > c["natural_cosine"] for c in table)
    print(f"activation atlas of {layer}, {len(pixels)} photos × {positions} positions, {grid}×{grid} lattice, "
          f"{steps} steps: icon closer to its direction than the cell's own activations in {closer} of {len(table)} "
          f"cells (median icon {np.median([c['icon_cosine'] for c in table]):.3f}, "
          f"natural {np.median([c['natural_cosine'] for c in table]):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=48, help="channels of the middle layer in the quality check")
    parser.add_argument("--speed-channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: speed, quality, diversity, cells")
    args = parser.parse_args()
    torch.set_num_threads(Settings().worker_torch_threads)
    store = ModelStore(Settings().data_dir)
    network = load_network(store.get(BUILTIN_ID), store, torch.device("cpu"))
    middle = network.record.layers[len(network.record.layers) // 2]
    every = max(1, middle.shape[0] // args.channels)
    print(f"built-in model, torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    skip = set(args.skip.split(","))
    if "speed" not in skip:
        speed(network, "_blocks.5._relu1", list(range(args.speed_channels)), args.steps, args.size, args.batch)
    if "quality" not in skip:
        quality(network, middle.name, list(range(0, middle.shape[0], every))[:args.channels], args.steps, args.size,
                args.batch)
    if "diversity" not in skip:
        diversity(network, middle.name, 0, args.steps, args.size)
    if "cells" not in skip:
        cells(network, middle.name, args.steps)


if __name__ == "__main__":
    main()
