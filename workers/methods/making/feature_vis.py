"""Feature visualisation (Olah et al. 2017; Erhan et al. 2009): an image that maximises one channel's
mean activation, or one neuron at a grid position."""

from __future__ import annotations

from core.methods import Made
from workers.methods.mechanics import ascent, objectives
from workers.methods.mechanics.image_making import ascent_of, features, from_uint8, image_param, reporter, space_of, to_uint8


def run(task) -> Made:
    network, params = task.network, task.params
    if params.position is None:
        objective = objectives.channel(params.layer, params.channel)
    else:
        objective = objectives.neuron(params.layer, params.channel, tuple(params.position))
    space = space_of(network)
    image, value = ascent.optimise(network, space, image_param(params, (params.size, params.size)),
                                   objective, ascent_of(params), reporter(task))
    pixels = to_uint8(image)
    acts = features(network, space(from_uint8(pixels, image.device)), [params.layer])[params.layer]
    return Made({"image.png": pixels}, {"objective": value,
                                        "channel_mean": float(acts[0, params.channel].mean())})
