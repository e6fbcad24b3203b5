"""Targeted fooling images (Szegedy et al. 2014; Goodfellow et al. 2015; Madry et al. 2018):
maximise log p(target | x + δ) with ‖δ‖∞ ≤ ε, by projected signed-gradient steps (PGD) or one
fast gradient-sign step (FGSM). Pixel units are 0–255; the answer is checked after rounding to
8 bits, exactly as the client will decode it."""

from __future__ import annotations

import numpy as np
import torch

from core.methods import Made
from workers.methods.mechanics.image_making import space_of, to_uint8


def run(task) -> Made:
    network, params = task.network, task.params
    record = network.record
    target = record.class_index(params.target)
    space = space_of(network)
    original = (space.inverse(task.x).clamp(0, 1) * 255).round()  # 1×3×H×W, 0–255 integers
    budget = float(np.floor(params.epsilon))
    steps = 1 if params.method == "fgsm" else params.steps
    step = params.epsilon if params.method == "fgsm" else (params.step_size or max(0.5, 2.5 * params.epsilon / steps))

    def classify(pixels: torch.Tensor) -> torch.Tensor:
        return network.module(space(pixels / 255)).reshape(1, -1).softmax(1)[0]

    with torch.no_grad():
        source = int(classify(original).argmax())
    adv = original.clone()
    best = (-1.0, original)
    for i in range(steps):
        adv.requires_grad_(True)
        log_p = torch.log_softmax(network.module(space(adv / 255)).reshape(1, -1), 1)[0, target]
        (grad,) = torch.autograd.grad(log_p, adv)
        with torch.no_grad():
            adv = adv + step * grad.sign()
            adv = torch.minimum(torch.maximum(adv, original - params.epsilon), original + params.epsilon).clamp(0, 255)
            rounded = torch.minimum(torch.maximum(adv.round(), original - budget), original + budget)
            probs = classify(rounded)
            if int(probs.argmax()) == target and float(probs[target]) > best[0]:
                best = (float(probs[target]), rounded)
        task.progress(i + 1, steps)
    final = best[1] if best[0] >= 0 else torch.minimum(torch.maximum(adv.round(), original - budget), original + budget)
    with torch.no_grad():
        probs = classify(final)
    delta = final - original
    amplified = (delta / max(budget, 1.0) * 127.5 + 127.5).clamp(0, 255) / 255
    return Made({"image.png": to_uint8(final / 255), "perturbation.png": to_uint8(amplified)}, {
        "source_class": source, "source_label": record.label(source),
        "final_class": int(probs.argmax()), "final_label": record.label(int(probs.argmax())),
        "target": target, "target_probability": float(probs[target]),
        "linf": float(delta.abs().max()), "epsilon": params.epsilon, "method": params.method})
