"""Class model visualisation (Simonyan et al. 2014): argmax_I S_c(I) − λ‖I‖², here with the
robustness transforms and Fourier parameterisation that make it legible (Yosinski et al. 2015;
Olah et al. 2017). Returns the image and the target's probability on the 8-bit result."""

from __future__ import annotations

import torch

from core.methods import Made
from workers.methods.mechanics import ascent, objectives
from workers.methods.mechanics.image_making import ascent_of, from_uint8, image_param, reporter, space_of, to_uint8


def run(task) -> Made:
    network, params = task.network, task.params
    record = network.record
    target = record.class_index(params.target)
    space = space_of(network)
    image, value = ascent.optimise(network, space, image_param(params, (params.size, params.size)),
                                   objectives.class_logit(target), ascent_of(params), reporter(task))
    pixels = to_uint8(image)
    with torch.no_grad():
        logits = network.module(space(from_uint8(pixels, image.device)))
    probability = float(logits.reshape(1, -1).softmax(1)[0, target])
    return Made({"image.png": pixels}, {"target": target, "target_label": record.label(target),
                                        "target_probability": probability, "objective": value})
