"""Image-making methods on the built-in model: each shows what it promises, measured on the 8-bit
result a client would decode (quality properties of issue 5), at sizes small enough for CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core import preprocessing
from core.kinds import making as P
from core.methods import ImageInput
from tests.conftest import sample
from workers.methods.making import adversarial, class_model, deepdream, feature_vis, inversion, style_transfer, texture
from workers.methods.mechanics.image_making import features, from_uint8
from workers.methods.mechanics.parameterisations import ModelSpace
from workers.methods.task import Task, TensorImage
from workers.networks import load_network

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "camera", "hubble_deep_field", "immunohistochemistry"]


@pytest.fixture(scope="module")
def network(builtin, builtin_store):
    torch.manual_seed(0)
    return load_network(builtin, builtin_store, torch.device("cpu"))


def image_input(record, photo: str) -> ImageInput:
    """A sample photo through the one image pipeline, as the runner reads an uploaded image."""
    pixels = sample(photo)
    pixels = np.dstack([pixels] * 3) if pixels.ndim == 2 else pixels[..., :3]
    fitted = preprocessing.fit(Image.fromarray(pixels), record)
    return ImageInput(pixels, np.asarray(fitted), preprocessing.to_tensor(fitted, record))


def model_input(record, photo: str) -> torch.Tensor:
    """The photo's exact 1×C×H×W model input."""
    return torch.from_numpy(image_input(record, photo).x)


def task(network, params, photo: str = "chelsea", style: str | None = None, **extra) -> Task:
    """A method call on `photo` (the kind's `image` input) and, for style transfer, `style`."""
    inputs = {"image": TensorImage.of(image_input(network.record, photo), "cpu")}
    if style is not None:
        inputs["style_image"] = TensorImage.of(image_input(network.record, style), "cpu")
    return Task(network=network, x=inputs["image"].x, params=params.resolve(network.record), inputs=inputs, **extra)


def probability(network, pixels: np.ndarray, target: int) -> float:
    space = ModelSpace(network.record)
    with torch.no_grad():
        return float(network.module(space(from_uint8(pixels, torch.device("cpu")))).softmax(1)[0, target])


@pytest.mark.parametrize("target", ["goldfish", "espresso", "balloon"])
def test_class_model_is_classified_as_its_target(network, target):
    made = class_model.run(task(network, P.ClassModelParams(target=target, size=96, steps=96)))
    index = network.record.class_index(target)
    assert made.images["image.png"].shape == (96, 96, 3)
    measured = probability(network, made.images["image.png"], index)  # on the 8-bit result a client decodes
    assert measured >= 0.8
    assert made.metrics["target_probability"] == pytest.approx(measured, abs=1e-6)


def test_feature_vis_beats_every_photo(network):
    layer, channel = "_blocks.5._relu1", 7
    made = feature_vis.run(task(network, P.FeatureVisParams(layer=layer, channel=channel, size=96, steps=64)))
    best_photo = max(float(features(network, model_input(network.record, p), [layer])[layer][0, channel].mean())
                     for p in PHOTOS)
    assert made.metrics["channel_mean"] >= 3 * best_photo


def test_previews_come_every_n_steps(network):
    seen = []
    feature_vis.run(task(network, P.FeatureVisParams(layer="_relu0", channel=3, size=48, steps=8, preview_every=4),
                         preview=lambda step, pixels: seen.append((step, pixels.shape))))
    assert seen == [(4, (48, 48, 3)), (8, (48, 48, 3))]


def test_inversion_reconstructs_the_features(network):
    layer = "_blocks.2"  # a residual output at 56×56: noise there is far (relative error ≈ 1.6)
    job = task(network, P.InversionParams(layer=layer, steps=100))
    made = inversion.run(job)
    target = features(network, job.x, [layer])[layer]
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    space = ModelSpace(network.record)
    random_error = inversion.relative_error(
        features(network, space(from_uint8(noise.numpy(), torch.device("cpu"))), [layer])[layer], target)
    error = made.metrics["relative_feature_error"]
    assert error <= 0.3 and error * 5 <= random_error


def test_deepdream_keeps_the_size_and_amplifies_the_layer(network):
    photo = sample("coffee")
    params = P.DeepdreamParams(layer="_blocks.7", octaves=2, steps=5, max_size=256)
    made = deepdream.run(task(network, params, "coffee"))
    out = made.images["image.png"]
    assert out.shape[:2] == (round(photo.shape[0] * 256 / photo.shape[1]), 256)
    assert made.metrics["mean_abs_change"] > 5
    assert made.metrics["layer_energy_after"] > 1.5 * made.metrics["layer_energy_before"]


@pytest.mark.parametrize("method", ["pgd", "fgsm"])
def test_adversarial_flips_to_the_target_within_epsilon(network, method):
    params = P.AdversarialParams(target="ostrich", epsilon=8 if method == "fgsm" else 4, method=method, steps=20)
    job = task(network, params)
    made = adversarial.run(job)
    ostrich = network.record.class_index("ostrich")
    pixels = made.images["image.png"]
    space = ModelSpace(network.record)
    original = (space.inverse(job.x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(pixels.astype(float) - original).max() <= params.epsilon
    assert made.metrics["linf"] <= params.epsilon
    if method == "pgd":  # FGSM is one step: a flip is not promised
        with torch.no_grad():
            logits = network.module(space(from_uint8(pixels, torch.device("cpu"))))
        assert int(logits.argmax()) == ostrich == made.metrics["final_class"]
        assert made.metrics["source_class"] != ostrich
    assert made.images["perturbation.png"].shape == pixels.shape


def test_texture_matches_the_grams(network):
    made = texture.run(task(network, P.TextureParams(size=96, steps=80)))
    assert made.metrics["gram_loss"] < 0.2 * made.metrics["start_gram_loss"]


def test_style_transfer_takes_the_style_and_keeps_the_content(network):
    job = task(network, P.StyleTransferParams(size=96, steps=60), "chelsea", style="coffee")
    made = style_transfer.run(job)
    assert made.metrics["style_loss"] < 0.3 * made.metrics["content_image_style_loss"]
    assert made.metrics["content_loss"] < 0.9


def test_rectifiers_are_restored_after_an_ascent(network):
    before = {name: "forward" in vars(m) for name, m in network.module.named_modules()}

    def explode(step, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        feature_vis.run(task(network, P.FeatureVisParams(layer="_relu0", channel=0, size=32, steps=3),
                             progress=explode))
    assert {name: "forward" in vars(m) for name, m in network.module.named_modules()} == before
    assert not any(m._forward_hooks for m in network.module.modules())
