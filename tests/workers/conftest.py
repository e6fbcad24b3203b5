"""A small conv-ReLU-maxpool classifier with fixed (seeded) weights, wrapped as a worker `Network`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.model_record import InputSpec, Layer, ModelRecord, Preprocess, ReceptiveField
from tests import oracles
from workers.networks import Network

SIZE = 16
CLASSES = 5


class SmallNet(nn.Module):
    """3×16×16 → conv(6) ReLU maxpool → conv(8) ReLU maxpool → linear(5)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, CLASSES)

    def features(self, x):
        return self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x)))))

    def forward(self, x):
        return self.fc(torch.flatten(self.pool2(self.features(x)), 1))


def small_record() -> ModelRecord:
    field = ReceptiveField(size=1, stride=1, start=0)
    return ModelRecord(
        id="small", name="small", source="upload", input=InputSpec(channels=3, height=SIZE, width=SIZE),
        preprocess=Preprocess(mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3], resize=None),
        num_classes=CLASSES, labels=[f"class{i}" for i in range(CLASSES)],
        layers=[Layer(name="relu1", op="Relu", shape=[6, SIZE, SIZE], receptive_field=field),
                Layer(name="relu2", op="Relu", shape=[8, SIZE // 2, SIZE // 2], receptive_field=field)],
        onnx_sha256="0" * 64, input_name="x", logits_name="y")


@pytest.fixture
def small_net() -> Network:
    torch.manual_seed(0)
    module = SmallNet().eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return Network(module, small_record(), module.get_submodule)


@pytest.fixture
def small_input() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, SIZE, SIZE, generator=generator)


@pytest.fixture(scope="session")
def small_classify():
    """classify(N×3×16×16) → N×5 softmax probabilities of the small net (the `small_net` fixture's weights),
    on ONNX Runtime from its ONNX export, as the runner's forward passes run."""
    import numpy as np
    import onnxruntime

    from models.forward import softmax
    from tests.onnx_builders import export

    torch.manual_seed(0)
    session = onnxruntime.InferenceSession(export(SmallNet().eval(), 17, size=SIZE), providers=["CPUExecutionProvider"])

    def classify(x):
        return softmax(session.run(None, {"image": np.ascontiguousarray(x, np.float32)})[0]).astype(np.float32)

    return classify


@pytest.fixture
def small_photo():
    """A 1×3×16×16 model input of a photo (the cat), normalised as the small record says: superpixels need
    an image with regions, where the random `small_input` has none."""
    from PIL import Image

    from core.preprocessing import to_tensor
    from tests.conftest import sample

    return torch.from_numpy(to_tensor(Image.fromarray(sample("chelsea")).resize((SIZE, SIZE)), small_record()))


@pytest.fixture(scope="session")
def cat(builtin) -> torch.Tensor:
    """The chelsea photo as the built-in model's exact 1×3×224×224 input (the one image pipeline)."""
    from core import images, preprocessing
    from tests.conftest import encode, sample

    image = images.decode(encode(sample("chelsea")), max_bytes=10**8, max_pixels=10**8)
    return torch.from_numpy(preprocessing.to_tensor(preprocessing.fit(image, builtin), builtin))


@pytest.fixture(scope="session")
def pytorch_grad_cam():
    """pytorch-grad-cam (the oracle for CAMs and ROAD), imported (`tests.oracles`)."""
    return oracles.pytorch_grad_cam()


@pytest.fixture(scope="session")
def zennit():
    """zennit (the oracle for LRP), imported (`tests.oracles`)."""
    return oracles.zennit()
