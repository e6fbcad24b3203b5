"""`caricature` on the built-in model: on three photos, the caricature's activations at the layer (measured on its
8-bit PNG) are closer in cosine to the photo's than those of the photo's own randomly transformed copies are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.kinds.making import CaricatureParams
from tests.workers.test_image_making import image_input
from workers.methods.making import caricature
from workers.methods.mechanics import transforms
from workers.methods.mechanics.image_making import features, from_uint8
from workers.methods.mechanics.parameterisations import ModelSpace
from workers.methods.task import Task, TensorImage

SIZE = 128


def acts(network, rgb: torch.Tensor, layer: str) -> torch.Tensor:
    return features(network, ModelSpace(network.record)(rgb), [layer])[layer].flatten()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("photo", ["chelsea", "coffee", "astronaut"])
def test_a_caricature_is_closer_to_the_photo_than_its_augmented_copies(lite0, photo):
    params = CaricatureParams(steps=48, size=SIZE, preview_every=16).resolve(lite0.record)
    image = TensorImage.of(image_input(lite0.record, photo), "cpu")
    previews, steps = [], []
    made = caricature.run(Task(network=lite0, x=image.x, params=params, inputs={"image": image},
                               progress=lambda s, t: steps.append((s, t)), preview=lambda s, p: previews.append(p)))
    pixels = made.images["image.png"]
    assert pixels.shape == (SIZE, SIZE, 3) and steps[-1] == (48, 48) and len(previews) == 3
    fitted = Image.fromarray(image_input(lite0.record, photo).fitted).resize((SIZE, SIZE), Image.BILINEAR)
    reference = acts(lite0, from_uint8(np.asarray(fitted), torch.device("cpu")), params.layer)
    found = cos(acts(lite0, from_uint8(pixels, torch.device("cpu")), params.layer), reference)

    generator = torch.Generator().manual_seed(99)
    photo_rgb = from_uint8(np.asarray(fitted), torch.device("cpu"))
    copies = []
    for _ in range(8):
        view = photo_rgb
        for transform in transforms.standard_transforms(1):
            view = transform(view, generator)
        view = torch.nn.functional.interpolate(view, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        copies.append(cos(acts(lite0, view, params.layer), reference))
    assert found > np.mean(copies), (found, copies)
    assert made.metrics["cosine"] == pytest.approx(found, abs=0.02)
    assert made.metrics["cosine"] > made.metrics["augmented_cosine"]


def test_a_fixed_size_model_refuses_another_size(builtin):
    fixed = builtin.model_copy(update={"input": builtin.input.model_copy(update={"dynamic_size": False})})
    with pytest.raises(ValueError, match="fixed"):
        CaricatureParams(size=128).resolve(fixed)
    assert CaricatureParams(size=224).resolve(fixed).layer
