"""What a worker process holds for its lifetime, handed to the runner and the input loaders."""

from __future__ import annotations

from dataclasses import dataclass

from core.jobs.store import JobStore
from core.settings import Settings
from core.stores.models import ModelStore
from models.runtimes import Runtimes
from workers.networks import NetworkCache


@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    models: ModelStore
    networks: NetworkCache
    name: str
    runtimes: Runtimes  # ONNX Runtime sessions for forward-only work: scores, RISE, Kernel SHAP
