"""Uploaded image files in Redis, by content id, in their owner's namespace, with a TTL.

Images are never deleted through the API: they expire. A process that finds one in Redis may therefore trust it
to be there until the TTL it read runs out, and asks again only after `lease_s` (a bound on how long it would go on
trusting an image that Redis lost early, evicted or flushed, or whose TTL a process with a shorter `image_ttl_s`
set again). The forward views ask for an image they have prepared before on every request, so the lease takes a
Redis round trip off most of them.

Every image is charged to its owner's `image_bytes` account (`core.stores.usage`), and so is the PNG preview made
from it once (`preview`, kept as long as the image): an upload that would take the key past its quota is 429
`quota_exceeded`.
"""

from __future__ import annotations

import threading
import time

import redis

from core.errors import NotFound
from core.redis_client import redis_errors
from core.stores.usage import IMAGE_BYTES, NO_LIMIT, UsageLedger


class ImageStore:
    """Uploaded image files, by content id: another owner's id is simply not there (404)."""

    MAX_LEASES = 10_000

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int, lease_s: float = 0.0, quota_bytes: int = NO_LIMIT):
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self.quota_bytes = quota_bytes
        self.usage = UsageLedger(client, prefix)
        self._leases: dict[str, float] = {}  # key → monotonic time until which the image is known to be there
        self._lock = threading.Lock()

    def _key(self, owner: str | None, image_id: str) -> str:
        return f"{self.prefix}image:{owner or '_'}:{image_id}"

    def put(self, owner: str | None, image_id: str, data: bytes) -> None:
        """Keep the image for the TTL, charged to `owner` (429 `quota_exceeded` over `quota_bytes`)."""
        self.usage.charge(owner, IMAGE_BYTES, image_id, len(data), self.ttl_s, self.quota_bytes)
        try:
            with redis_errors():
                self.client.set(self._key(owner, image_id), data, ex=self.ttl_s)
        except Exception:
            self.usage.refund(owner, IMAGE_BYTES, image_id)
            raise

    def preview(self, owner: str | None, image_id: str, make) -> bytes:
        """The image's PNG preview: the one kept in Redis, else `make(data)`'s (made once, then kept as long as the
        image and charged to its owner, never refused: the image was admitted)."""
        key, preview_key = self._key(owner, image_id), f"{self.prefix}imagepng:{owner or '_'}:{image_id}"
        with redis_errors():
            with self.client.pipeline(transaction=False) as pipe:
                pipe.get(preview_key)
                pipe.pttl(key)
                cached, left_ms = pipe.execute()
        if cached is not None:
            return cached
        if left_ms == -2:
            raise NotFound(f"no image with id {image_id!r}", code="image_not_found")
        png = make(self.get(owner, image_id))
        left_s = self.ttl_s if left_ms < 0 else max(1.0, left_ms / 1000)
        with redis_errors():
            self.usage.charge(owner, IMAGE_BYTES, f"{image_id}.png", len(png), left_s, NO_LIMIT)
            self.client.set(preview_key, png, px=int(left_s * 1000))
        return png

    def require(self, owner: str | None, image_id: str) -> None:
        """NotFound unless the owner has this image: its TTL read from Redis (the bytes stay there), at most once
        per `lease_s` while the image lives."""
        key = self._key(owner, image_id)
        asked = time.monotonic()
        if self._leases.get(key, 0.0) > asked:
            return
        with redis_errors():
            left_ms = self.client.pttl(key)  # -2: no such key; -1: no TTL
        if left_ms == -2:
            raise NotFound(f"no image with id {image_id!r}", code="image_not_found")
        if self.lease_s > 0:
            lease = self.lease_s if left_ms < 0 else min(self.lease_s, left_ms / 1000)
            with self._lock:
                if len(self._leases) >= self.MAX_LEASES:
                    self._leases = {k: until for k, until in self._leases.items() if until > asked}
                    if len(self._leases) >= self.MAX_LEASES:
                        self._leases.clear()
                self._leases[key] = asked + lease

    def get(self, owner: str | None, image_id: str) -> bytes:
        with redis_errors():
            data = self.client.get(self._key(owner, image_id))
        if data is None:
            raise NotFound(f"no image with id {image_id!r}", code="image_not_found")
        return data
