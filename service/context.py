"""What the app holds for its lifetime (settings, Redis, stores, sessions) and how routes reach it."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from fastapi import Request

from core.errors import NotFound
from core.images import InputCache
from core.model_record import ModelRecord
from core.settings import Settings
from core.stores.images import ImageStore
from core.stores.models import ModelStore
from models.runtimes import Runtimes
from models.warm import Warmer
from service.auth import visible
from service.lanes import Lanes


@dataclass
class AppContext:
    settings: Settings
    redis: redis.Redis
    models: ModelStore
    images: ImageStore
    runtimes: Runtimes
    inputs: InputCache
    lanes: Lanes  # the threads forward views run on (`service.lanes`)
    warmer: Warmer | None = None  # `/readyz` waits for its `ready` (the built-in model's session warm)

    def model(self, model_id: str) -> ModelRecord:
        try:
            record = self.models.get(model_id)
        except ValueError:
            record = None
        if record is None or not visible(record.owner):
            raise NotFound(f"no model with id {model_id!r}", code="model_not_found")
        return record


async def context(request: Request) -> AppContext:
    """FastAPI dependency: the running app's context (async: FastAPI would run a plain function in its thread
    pool, a thread hop per request for an attribute lookup)."""
    return request.app.state.ctx
