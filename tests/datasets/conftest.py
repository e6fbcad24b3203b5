"""Shared by the dataset-kind tests: twelve photos as a dataset, a tiny net with known weights, and
helpers that build a `DatasetTask` on the real dataset feed and compute brute-force references."""


from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core import images, preprocessing
from core.methods import Output, no_progress
from core.settings import Settings
from core.stores.datasets import DatasetStore, Upload
from tests.conftest import encode, sample

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel", "camera", "coins", "moon", "page"]
TINY_SIZE = 64


def photo_files() -> list[tuple[str, bytes]]:
    """12 sample photos, shrunk (long side 160 px), every other one mirrored and cropped."""
    files = []
    for n, name in enumerate(PHOTOS):
        image = Image.fromarray(sample(name))
        image.thumbnail((160, 160))
        if n % 2:
            image = image.transpose(Image.FLIP_LEFT_RIGHT).crop((8, 4, image.width, image.height))
        files.append((f"{name}.png", encode(np.asarray(image))))
    return files


class TinyNet(nn.Module):
    """conv3 → ReLU → conv3/2 → ReLU → avgpool2 → conv3 → ReLU (the layer under test) → mean → linear.
    Receptive field of the last ReLU: size 15, stride 4, start −6. Channel `dead` can never fire."""

    def __init__(self, dead: int | None = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1, self.relu1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv3, self.relu3 = nn.Conv2d(8, 5, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(5, 4)
        with torch.no_grad():
            self.conv3.bias.add_(0.1)
            if dead is not None:
                self.conv3.weight[dead] = 0.0
                self.conv3.bias[dead] = -1.0

    def features(self, x):
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.relu3(self.conv3(x))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def export(net: nn.Module) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), torch.zeros(1, 3, TINY_SIZE, TINY_SIZE), out, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          opset_version=17, dynamo=False)
    return out.getvalue()


@pytest.fixture(scope="package")
def tiny(tmp_path_factory):
    """(torch net, model store, record, name of the last ReLU layer) for a tiny net registered in a tmp store."""
    from core.model_record import Preprocess
    from core.stores.models import ModelStore
    from models.register import register

    net = TinyNet().eval()
    store = ModelStore(tmp_path_factory.mktemp("tiny-store"))
    record = register(store, export(net), model_id="tiny", name="tiny", source="upload", preprocess=Preprocess())
    layer = next(lay for lay in record.layers if lay.op == "Relu" and lay.shape == [5, 16, 16])
    return net, store, record, layer.name


@pytest.fixture(scope="package")
def settings(tmp_path_factory):
    return Settings(data_dir=tmp_path_factory.mktemp("data"), dataset_batch=5, ort_intra_threads=1)


@pytest.fixture(scope="package")
def dataset(settings):
    uploads = [Upload(name, io.BytesIO(data), len(data), archive=False) for name, data in photo_files()]
    created, rejected = DatasetStore(settings.data_dir, settings.dataset_ttl_s).create(uploads, None, settings)
    assert created.count == 12 and not rejected
    return created


def task_for(settings, store, record, dataset, kind: str, progress=None, image: bytes | None = None, **params):
    from core import images
    from core.kinds.registry import KINDS
    from core.methods import DatasetTask
    from workers.dataset_feed import open_feed

    resolved = KINDS[kind].params(**params).resolve(record)
    feed = open_feed(settings, store, record, dataset, progress or no_progress)
    query = None if image is None else images.prepare(image, record, max_bytes=settings.max_image_bytes,
                                                      max_pixels=settings.max_image_pixels)
    return DatasetTask(record, resolved, feed, query)


def model_inputs(dataset, record) -> torch.Tensor:
    xs = [preprocessing.to_tensor(preprocessing.fit(images.decode(dataset.read(i), max_bytes=1 << 30, max_pixels=1 << 30),
                                                    record), record) for i in range(dataset.count)]
    return torch.from_numpy(np.concatenate(xs))


def brute_force_top(maps: np.ndarray, channel: int, k: int) -> list[tuple[int, int, int]]:
    """(image, y, x) of the k images with the largest spatial maximum: sort everything, no heap."""
    n, _, _, w = maps.shape
    flat = maps[:, channel].reshape(n, -1)
    best = [(-float(flat[i].max()), i, int(flat[i].argmax())) for i in range(n)]
    return [(i, *divmod(p, w)) for _, i, p in sorted(best)[:k]]


def is_picture(pixels: np.ndarray, channels: int = 3) -> bool:
    return pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == channels


def top_of(task) -> list[dict]:
    from workers.methods.dataset import top_activations

    out = top_activations.run(task)
    assert isinstance(out, Output) and set(out.tables) == {"top"} and set(out.pictures) == {"patches"}
    assert is_picture(out.pictures["patches"]) and not out.arrays
    return out.tables["top"]
