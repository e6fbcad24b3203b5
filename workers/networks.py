"""The torch side of a model: the network every method receives, loaded once per worker process.

A `Network` is a float32 eval-mode module on the worker's device (input: model-space N×C×H×W,
output: N×num_classes logits, or a backbone's output flattened per image), its record, and
`layer_module(name)`: the module whose forward output *is* the record's layer `name`, so hooks
there see exactly what the layer list describes.
The built-in model is the torch definition in `models/efficientnet_lite.py` (its layer names are
module paths); any other model is the torch twin of its ONNX file (`models.twin.load_twin`).
Parameters are frozen (`requires_grad=False`) at load: methods differentiate with respect to
inputs and activations only, which also spares the weight gradients.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import Invalid, Unavailable
from core.model_record import ModelRecord
from core.stores.models import ModelStore
from models.builtin import BUILTIN_ID
from models.sessions import release_memory


@dataclass
class Network:
    module: nn.Module
    record: ModelRecord
    resolve_layer: Callable[[str], nn.Module]

    def layer_module(self, name: str) -> nn.Module:
        """The module whose output is layer `name` (422 `unknown_layer` when there is none)."""
        try:
            return self.resolve_layer(name)
        except (AttributeError, KeyError, ValueError, LookupError):
            raise Invalid(f"model {self.record.id!r} has no layer {name!r} to hook", code="unknown_layer") from None


def _prepare(module: nn.Module, device: torch.device) -> nn.Module:
    module = module.to(device=device, dtype=torch.float32).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def load_network(record: ModelRecord, store: ModelStore, device: torch.device) -> Network:
    """Build the torch network of a model record on `device`."""
    if record.source == "builtin" and record.id == BUILTIN_ID:
        from models.efficientnet_lite import load_pretrained

        module = _prepare(load_pretrained(), device)
        return Network(module, record, module.get_submodule)
    try:
        from models.twin import load_twin
    except ImportError as exc:
        raise Unavailable(f"model {record.id!r} needs its torch twin, and this build cannot make one ({exc})",
                          code="twin_unavailable") from None
    try:
        data = store.read_blob(record.onnx_sha256)  # verified; fetched once into this machine's cache
    except (OSError, KeyError) as exc:
        raise Unavailable(f"the file of model {record.id!r} cannot be read ({exc.__class__.__name__})",
                          code="model_unavailable") from None
    twin = load_twin(record, data)
    return Network(_prepare(twin.module, device), record, twin.layer_module)


def network_bytes(module: nn.Module) -> int:
    """Memory a network holds: its parameters and buffers, in bytes."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


class NetworkCache:
    """The worker's recently used networks, keyed by model id and file digest: at most `capacity` of them and
    `budget_bytes` of parameters and buffers (least recent dropped first; the one just loaded always stays).
    A dropped network lives on while a job still holds it."""

    def __init__(self, store: ModelStore, device: torch.device, capacity: int, budget_bytes: int = 4 * 1024**3):
        self.store = store
        self.device = device
        self.capacity = capacity
        self.budget_bytes = budget_bytes
        self._networks: OrderedDict[tuple[str, str], tuple[Network, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, record: ModelRecord) -> Network:
        key = (record.id, record.onnx_sha256)
        with self._lock:
            held = self._networks.get(key)
            if held is not None:
                self._networks.move_to_end(key)
                return held[0]
        network = load_network(record, self.store, self.device)
        evicted = False
        with self._lock:
            self._networks[key] = (network, network_bytes(network.module))
            while len(self._networks) > 1 and (len(self._networks) > self.capacity or self.held_bytes() > self.budget_bytes):
                self._networks.popitem(last=False)
                self.evictions += 1
                evicted = True
        if evicted:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            release_memory()
        return network

    def held_bytes(self) -> int:
        return sum(size for _, size in self._networks.values())

    def __len__(self) -> int:
        return len(self._networks)
