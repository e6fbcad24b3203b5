"""The worker's network cache is bounded by bytes of weights as well as by count (least recently used first)."""

from __future__ import annotations

import torch
from torch import nn

from core.model_record import InputSpec, ModelRecord, Preprocess
from workers import networks
from workers.networks import Network, NetworkCache, network_bytes


def record(model_id: str) -> ModelRecord:
    return ModelRecord(id=model_id, name=model_id, source="upload", input=InputSpec(channels=3, height=8, width=8),
                       preprocess=Preprocess(), num_classes=2, onnx_sha256="0" * 64, input_name="x", logits_name="y")


def test_networks_beyond_the_byte_budget_go_least_recently_used_first(monkeypatch):
    sizes = {"a": 1000, "b": 1000, "c": 1000, "big": 5000}  # float32 parameters: 4 bytes each
    loads = []

    def load(rec, store, device):
        loads.append(rec.id)
        module = nn.Linear(sizes[rec.id], 1, bias=False)
        return Network(module, rec, module.get_submodule)

    monkeypatch.setattr(networks, "load_network", load)
    cache = NetworkCache(store=None, device=torch.device("cpu"), capacity=10, budget_bytes=8_500)
    held = cache.get(record("a"))
    assert network_bytes(held.module) == 4000
    cache.get(record("b"))
    cache.get(record("a"))  # a is now the most recent
    cache.get(record("c"))  # 12 000 bytes > 8 500: b goes
    assert cache.held_bytes() == 8000 and len(cache) == 2 and cache.evictions == 1
    cache.get(record("a"))
    assert loads == ["a", "b", "c"]
    cache.get(record("big"))  # larger than the budget alone: kept, everything else dropped
    assert len(cache) == 1 and cache.held_bytes() == 20_000
    assert held.module.weight.shape == (1, 1000)  # a job still holding an evicted network keeps it intact
