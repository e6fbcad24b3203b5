"""Running any attribution kind from inside another kind (`sanity_check`, `compare`): a gradient method on a
network, or a forward-only one (RISE, Kernel SHAP) on a `classify` function."""

from __future__ import annotations

import numpy as np
import torch

from core.kinds.attribution import BY_NAME
from core.kinds.kind import Engine
from core.methods import Attribution, Classify, ForwardTask, LayerForward, Network, Progress, no_progress
from workers.methods import method_of
from workers.methods.mechanics.backprop import forward_until
from workers.methods.task import Task


def method(kind: str):
    """The attribution kind's method function (`run`)."""
    return method_of(BY_NAME[kind])


class TorchLayers:
    """`LayerForward` on a torch network (for a network that ONNX Runtime does not have, such as a randomised copy):
    logits, a layer's activations (a forward hook that ends the pass there), and the logits from given activations
    of a layer on (a forward hook that replaces the layer's output)."""

    def __init__(self, network: Network):
        self.network = network
        self.device = next(network.module.parameters()).device

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def _run(self, x: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.network.module(self._tensor(x))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._run(x).flatten(1).float().cpu().numpy()

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return self._run(x).flatten(1).softmax(dim=1).float().cpu().numpy()

    def layer(self, x: np.ndarray, name: str) -> np.ndarray:
        with torch.no_grad():
            return forward_until(self.network, self._tensor(x), name).float().cpu().numpy()

    def from_layer(self, name: str, activations: np.ndarray, x: np.ndarray) -> np.ndarray:
        replaced = self._tensor(activations)
        handle = self.network.layer_module(name).register_forward_hook(lambda module, args, output: replaced)
        try:
            return self.logits(np.repeat(x[:1], len(activations), axis=0))
        finally:
            handle.remove()


def torch_classify(network: Network) -> Classify:
    """Softmax probabilities of a batch from the network itself (for a network that ONNX Runtime does not
    have, such as a randomised copy)."""
    return TorchLayers(network).probabilities


def attribute(kind: str, params, network: Network, x: torch.Tensor, classify: Classify, *, batch: int,
              forward_batch: int, progress: Progress = no_progress, model: LayerForward | None = None) -> Attribution:
    """Kind `kind`'s map of image `x` (1×C×H×W on the network's device) with resolved `params`; forward-only kinds
    on `model` (the runner's ONNX Runtime sessions) when given, else on the network itself."""
    if BY_NAME[kind].engine is Engine.ONNXRUNTIME:
        return method(kind)(ForwardTask(network.record, params, x.detach().cpu().numpy(), classify, progress,
                                        batch=forward_batch, model=model or TorchLayers(network)))
    return method(kind)(Task(network, x, params, progress, batch=batch, classify=classify,
                             forward_batch=forward_batch))
