"""The reference libraries the tests and benches compare with, imported where they can be.

pytorch-grad-cam (CAMs, ROAD) and zennit (LRP) import torchvision. The torchvision wheel on PyPI is a CUDA build
whose native library cannot load next to a CPU torch, and its import then fails registering fake kernels for two
ops (`nms`, `qnms`) that library would have defined. Declaring those two op schemas first lets the pure-Python
parts import; neither library uses torchvision's native ops. Test and bench dependencies only: convscope itself
never imports them."""

from __future__ import annotations

import torch

_declared: list = []


def _torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _declared.append(library)  # the schemas live as long as the library object
        import torchvision  # noqa: F401


def pytorch_grad_cam():
    _torchvision()
    import pytorch_grad_cam

    return pytorch_grad_cam


def zennit():
    _torchvision()
    import zennit

    return zennit
