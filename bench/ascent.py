"""Optimisation speed of the image-making kinds on the built-in model, against floors.

For each kind at its default size: steps per second of the method itself (`workers/methods`), of
a plain PyTorch gradient-ascent loop on the same network at the same image size (pixels,
Adam, one forward + one backward, nothing else: the floor), and for feature visualisation of a
lucid-style render loop written out independently (FFT parameterisation, decorrelated colour,
pad/jitter/scale/rotate, Adam). Usage: python bench/ascent.py [--steps 20]
"""

# ruff: noqa: E402 (the project's imports follow the sys.path line that makes them importable)
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.kinds import making as P
from core.settings import Settings
from core.stores.models import ModelStore
from models.builtin import BUILTIN_ID
from tests.workers.test_image_making import task
from workers.methods.making import adversarial, class_model, deepdream, feature_vis, inversion, style_transfer, texture
from workers.networks import load_network


def plain_loop(network, size: tuple[int, int], steps: int) -> float:
    """Steps/s of the floor: pixels → model → mean logit → backward → Adam."""
    x = torch.zeros(1, 3, *size, requires_grad=True)
    optimiser = torch.optim.Adam([x], lr=0.05)
    (-network.module(x)[0, 1]).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        optimiser.zero_grad()
        (-network.module(x)[0, 1]).backward()
        optimiser.step()
    return steps / (time.perf_counter() - start)


def lucid_style_loop(network, layer: str, channel: int, size: int, steps: int) -> float:
    """Steps/s of an independent lucid-style feature-visualisation loop."""
    h = w = size
    freqs = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None] ** 2)
    scale = 1.0 / freqs.clamp(min=1.0 / size)
    spectrum = (torch.randn(1, 3, h, w // 2 + 1, 2) * 0.01).requires_grad_(True)
    color = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    color = color / color.norm(dim=0).max()
    seen = {}
    handle = network.layer_module(layer).register_forward_hook(lambda m, i, o: seen.__setitem__("o", o))
    optimiser = torch.optim.Adam([spectrum], lr=0.05)
    start = time.perf_counter()
    try:
        for _ in range(steps):
            optimiser.zero_grad()
            image = torch.fft.irfftn(torch.view_as_complex(spectrum) * scale, s=(h, w), norm="ortho") / 4
            image = torch.sigmoid(torch.einsum("nchw,dc->ndhw", image, color))
            image = F.pad(image, [12] * 4, value=0.5)
            dy, dx = np.random.randint(0, 9, 2)
            image = image[:, :, dy: dy + h + 16, dx: dx + w + 16]
            image = F.interpolate(image, scale_factor=float(np.random.choice([0.9, 1.0, 1.1])), mode="bilinear")
            angle = math.radians(np.random.randint(-10, 11))
            theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0]])[None]
            grid = F.affine_grid(theta, list(image.shape), align_corners=False)
            image = F.grid_sample(image, grid, align_corners=False)
            network.module((image * 2) - 1)
            (-seen["o"][0, channel].mean()).backward()
            optimiser.step()
    finally:
        handle.remove()
    return steps / (time.perf_counter() - start)


def method_rate(module, network, params, steps_done: int, style: str | None = None) -> float:
    """Steps/s of a method on chelsea (the image input; deepdream at its own size), `style` for style transfer."""
    job = task(network, params, "chelsea", style=style)
    module.run(job)  # warm-up: first-call allocations are not part of the rate
    start = time.perf_counter()
    module.run(job)
    return steps_done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(Settings().worker_torch_threads)
    store = ModelStore(Settings().data_dir)
    network = load_network(store.get(BUILTIN_ID), store, torch.device("cpu"))
    n = args.steps
    rows = [
        ("class_model", 128, method_rate(class_model, network, P.ClassModelParams(target=1, steps=n), n)),
        ("feature_vis", 128, method_rate(feature_vis, network, P.FeatureVisParams(layer="_blocks.5._relu1", channel=7,
                                                                                  steps=n), n)),
        ("inversion", 224, method_rate(inversion, network, P.InversionParams(steps=n), n)),
        ("texture", 128, method_rate(texture, network, P.TextureParams(steps=n), n)),
        ("style_transfer", 192, method_rate(style_transfer, network, P.StyleTransferParams(steps=n), n,
                                            style="coffee")),
        ("adversarial", 224, method_rate(adversarial, network, P.AdversarialParams(target=9, steps=n), n)),
        ("deepdream (1 octave)", 451, method_rate(deepdream, network, P.DeepdreamParams(octaves=1, steps=n,
                                                                                        max_size=451), n)),
    ]
    print(f"built-in model, CPU, torch threads {torch.get_num_threads()}, {n} steps each")
    print(f"{'kind':22} {'size':>5} {'steps/s':>8} {'plain loop':>11} {'ratio':>6}")
    for name, size, rate in rows:
        shape = (size, size) if "deepdream" not in name else (300, 451)
        floor = plain_loop(network, shape, n)
        print(f"{name:22} {size:5d} {rate:8.2f} {floor:11.2f} {rate / floor:6.2f}")
    lucid = lucid_style_loop(network, "_blocks.5._relu1", 7, 128, n)
    ours = method_rate(feature_vis, network, P.FeatureVisParams(layer="_blocks.5._relu1", channel=7, steps=n), n)
    print(f"feature_vis 128: ours {ours:.2f} steps/s, lucid-style loop {lucid:.2f} steps/s, ratio {ours / lucid:.2f}")


if __name__ == "__main__":
    main()
