"""Known answers on the built-in model: on bundled photos it classifies with top-1 probability above 0.5,
Grad-CAM, RISE and Kernel SHAP maps delete the evidence faster than random maps at their own resolution
(seeded; the mean of three). How the pixel-level gradient methods compare with a pixel-level random map is
printed, not asserted: they often do not beat it (scattered pixel changes break the model's prediction
whatever their order), which is what a user should be told.

Deletion here replaces pixels by 0 in model-input space, the substrate of Petsiuk et al.'s own code (the
model's mean colour). The service's default, black, is printed beside it: a black patch can add evidence
for dark classes (the espresso in `coffee`), and Grad-CAM then does not always beat a random map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import images, preprocessing
from core.kinds.registry import KINDS
from core.methods import ForwardTask
from core.settings import Settings
from models.forward import softmax
from models.runtimes import Runtimes
from tests.conftest import encode, sample
from workers.methods.attribution import gradcam, guided_backprop, integrated_gradients, kernel_shap, rise, saliency
from workers.methods.mechanics import deletion_insertion
from workers.methods.task import Task
from workers.networks import load_network

PHOTOS = ["coffee", "camera", "stereo_motorcycle"]  # scikit-image's photos the model is sure of (p > 0.5)
STEPS = 16
SEEDS = range(3)


def photo(name: str) -> np.ndarray:
    pixels = sample(name)
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # the stereo pair's left image
    return np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels


@pytest.fixture(scope="module")
def model(builtin_store, builtin):
    rt = Runtimes(builtin_store, Settings()).get(builtin)
    network = load_network(builtin, builtin_store, torch.device("cpu"))

    def classify(batch):
        return softmax(rt.logits(batch)).astype(np.float32)

    return builtin, network, classify


def deletion(x, attribution, target, classify, record, baseline="zeros") -> float:
    return deletion_insertion.evaluate(x, attribution, target, classify, record, steps=STEPS,
                                       baseline=baseline)["deletion_auc"]


@pytest.mark.parametrize("name", PHOTOS)
def test_coarse_methods_delete_the_evidence_faster_than_random_maps(model, name):
    record, network, classify = model
    image = images.decode(encode(photo(name)), max_bytes=10**8, max_pixels=10**8)
    x = preprocessing.to_tensor(preprocessing.fit(image, record), record)
    probs = classify(x)[0]
    target = int(probs.argmax())
    assert probs[target] > 0.5

    def params(kind, **raw):
        return KINDS[kind].params(target=target, **raw).resolve(record)

    maps = {"gradcam": gradcam.run(Task(network, torch.from_numpy(x), params("gradcam"))).attribution,
            "rise": rise.run(ForwardTask(record, params("rise", masks=600), x, classify)).attribution}
    shap = kernel_shap.run(ForwardTask(record, params("kernel_shap", samples=400), x, classify))
    maps["kernel_shap"] = shap.attribution
    labels = shap.arrays["segments"].astype(int)
    cells = -(-x.shape[2] // params("rise").cell)

    def random_map(method, rng):  # at the method's own resolution
        if method == "gradcam":
            return rng.random((1, *maps["gradcam"].shape[1:])).astype(np.float32)
        if method == "rise":
            return rng.random((1, cells, cells)).astype(np.float32)
        return rng.random(int(labels.max()) + 1)[labels][None].astype(np.float32)

    row = {}
    for method, attribution in maps.items():
        ours = deletion(x, attribution, target, classify, record)
        chance = np.mean([deletion(x, random_map(method, np.random.default_rng(seed)), target, classify, record)
                          for seed in SEEDS])
        row[method] = (round(ours, 3), round(float(chance), 3),
                       round(deletion(x, attribution, target, classify, record, baseline="black"), 3))
        assert ours < chance, (method, ours, chance)
    pixel = {"saliency": saliency.run(Task(network, torch.from_numpy(x), params("saliency"))).attribution,
             "guided_backprop": guided_backprop.run(Task(network, torch.from_numpy(x), params("guided_backprop"))).attribution,
             "integrated_gradients": integrated_gradients.run(Task(network, torch.from_numpy(x),
                                                                   params("integrated_gradients", steps=16))).attribution}
    chance = np.mean([deletion(x, np.random.default_rng(seed).random((1, *x.shape[2:])).astype(np.float32), target,
                               classify, record) for seed in SEEDS])
    for method, attribution in pixel.items():
        row[method] = (round(deletion(x, attribution, target, classify, record), 3), round(float(chance), 3))
    print(f"\n{name} (target {target}, p {probs[target]:.2f}) deletion AUC: (method, random at its resolution"
          f"[, method with black deletion]): {row}")
