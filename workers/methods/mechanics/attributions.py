"""Running any attribution kind from inside another kind (`sanity_check`, `compare`): a gradient method on a
network, or a forward-only one (RISE, Kernel SHAP) on a `classify` function."""

from __future__ import annotations

import numpy as np
import torch

from core.kinds.attribution import BY_NAME
from core.kinds.kind import Engine
from core.methods import Attribution, Classify, ForwardTask, Network, Progress, no_progress
from workers.methods import method_of
from workers.methods.task import Task


def method(kind: str):
    """The attribution kind's method function (`run`)."""
    return method_of(BY_NAME[kind])


def torch_classify(network: Network) -> Classify:
    """Softmax probabilities of a batch from the network itself (for a network that ONNX Runtime does not
    have, such as a randomised copy)."""
    def classify(x: np.ndarray) -> np.ndarray:
        device = next(network.module.parameters()).device
        with torch.no_grad():
            logits = network.module(torch.from_numpy(np.ascontiguousarray(x)).to(device))
        return logits.flatten(1).softmax(dim=1).float().cpu().numpy()
    return classify


def attribute(kind: str, params, network: Network, x: torch.Tensor, classify: Classify, *, batch: int,
              forward_batch: int, progress: Progress = no_progress) -> Attribution:
    """Kind `kind`'s map of image `x` (1×C×H×W on the network's device) with resolved `params`."""
    if BY_NAME[kind].engine is Engine.ONNXRUNTIME:
        return method(kind)(ForwardTask(network.record, params, x.detach().cpu().numpy(), classify, progress,
                                        batch=forward_batch))
    return method(kind)(Task(network, x, params, progress, batch=batch, classify=classify,
                             forward_batch=forward_batch))
