"""Redis access for the API: one client, key names under one prefix, Redis failures as 503."""

from __future__ import annotations

import contextlib

import redis

from service.errors import NotFound, Unavailable


@contextlib.contextmanager
def redis_errors():
    """Turn a Redis outage into `Unavailable` (503), whatever call it hit."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise Unavailable(f"Redis is unavailable: {exc.__class__.__name__}", code="redis_unavailable") from None


def connect(url: str) -> redis.Redis:
    """A pooled client that fails fast (2 s) when Redis is away and reconnects by itself."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=15)


class ImageStore:
    """Uploaded image files, by content id, with a TTL."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int):
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, image_id: str) -> str:
        """Images live in the caller's own namespace: another key's id is simply not there (404)."""
        from service.auth import current_owner

        return f"{self.prefix}image:{current_owner.get() or '_'}:{image_id}"

    def put(self, image_id: str, data: bytes) -> None:
        with redis_errors():
            self.client.set(self._key(image_id), data, ex=self.ttl_s)

    def get(self, image_id: str) -> bytes:
        with redis_errors():
            data = self.client.get(self._key(image_id))
        if data is None:
            raise NotFound(f"no image with id {image_id!r}", code="image_not_found")
        return data
