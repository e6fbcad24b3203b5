"""Uploaded image files in Redis, by content id, in their owner's namespace, with a TTL."""

from __future__ import annotations

import redis

from core.errors import NotFound
from core.redis_client import redis_errors


class ImageStore:
    """Uploaded image files, by content id: another owner's id is simply not there (404)."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int):
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, owner: str | None, image_id: str) -> str:
        return f"{self.prefix}image:{owner or '_'}:{image_id}"

    def put(self, owner: str | None, image_id: str, data: bytes) -> None:
        with redis_errors():
            self.client.set(self._key(owner, image_id), data, ex=self.ttl_s)

    def require(self, owner: str | None, image_id: str) -> None:
        """NotFound unless the owner has this image (one EXISTS: the bytes stay in Redis)."""
        with redis_errors():
            found = self.client.exists(self._key(owner, image_id))
        if not found:
            raise NotFound(f"no image with id {image_id!r}", code="image_not_found")

    def get(self, owner: str | None, image_id: str) -> bytes:
        with redis_errors():
            data = self.client.get(self._key(owner, image_id))
        if data is None:
            raise NotFound(f"no image with id {image_id!r}", code="image_not_found")
        return data
