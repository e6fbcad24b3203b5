"""Fair use of what every API key shares, as the API enforces it: the request rate and the long holds.

- The request rate: a token bucket per key in Redis (`core.rate_limit`), shared by every API process; a key over
  it gets 429 `rate_limited` with `Retry-After`. With no API keys (one tenant) there is no one to be fair to, and
  no limit.
- Holds: an event stream or a `?wait=` keeps one of this process's Redis connections for up to a minute or the
  job's life; each key may keep `max_holds_per_key` at once, so one key cannot take the connection pool that
  every key's requests need. More get 429 `too_many_holds` with `Retry-After`.
- The forward views' share (`ForwardShare`): while other keys have forward views running or waiting, a key runs at
  most `forward_share_per_key` at once and its others wait; alone, a key runs as many as admission lets in.

The job queues themselves are made fair by the workers (`core.jobs.queueing`), and what a key may store by its
quotas (`core.stores.usage`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter
from contextlib import contextmanager

import redis
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from core import timing
from core.errors import Overloaded
from core.rate_limit import TokenBuckets
from core.settings import Settings
from service.middleware import HEAVY

log = logging.getLogger("convscope.tenants")
HOLD_RETRY_AFTER_S = 5


class Tenants:
    """The rate limiter (once the app has Redis) and the count of each key's open holds in this process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.rates: TokenBuckets | None = None
        self.holding: dict[str | None, int] = {}

    def connect(self, client) -> None:
        """Start limiting the request rate, on the app's asyncio Redis client."""
        if self.settings.rate_limit_per_s > 0:
            self.rates = TokenBuckets(client, self.settings.redis_prefix, self.settings.rate_limit_per_s,
                                      self.settings.rate_limit_burst)

    async def admit(self, tenant: str | None) -> None:
        """429 `rate_limited` when the key has used up its requests (never for the open service's one tenant).
        A Redis outage lets the request through: the route that needs Redis answers 503 by itself, and one that
        does not (a forward view) should not fail for the limiter's sake."""
        if tenant is None or self.rates is None:
            return
        try:
            wait = await self.rates.take(tenant)
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("rate limit not checked: Redis is unavailable")
            return
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise Overloaded(f"this key makes more than {self.settings.rate_limit_per_s:g} requests a second; retry "
                             f"in {retry_after} s", code="rate_limited", retry_after=retry_after,
                             details={"rate_per_s": self.settings.rate_limit_per_s,
                                      "burst": self.settings.rate_limit_burst})

    def take(self, owner: str | None) -> None:
        """Count one more event stream or `?wait=` of `owner` (call `release` when it ends); 429 `too_many_holds`
        when the key already has its maximum open in this process."""
        held, limit = self.holding.get(owner, 0), self.settings.max_holds_per_key
        if held >= limit:
            raise Overloaded(f"this key already has {held} event streams or waits open (the limit is {limit}); "
                             "close one, or poll the job instead", code="too_many_holds",
                             retry_after=HOLD_RETRY_AFTER_S, details={"open": held, "limit": limit})
        self.holding[owner] = held + 1

    def release(self, owner: str | None) -> None:
        left = self.holding.get(owner, 0) - 1
        if left > 0:
            self.holding[owner] = left
        else:
            self.holding.pop(owner, None)

    def held(self, owner: str | None) -> int:
        """How many holds `owner` has open in this process."""
        return self.holding.get(owner, 0)

    @contextmanager
    def hold(self, owner: str | None):
        """One hold of `owner` while the block runs (`take` and `release`)."""
        self.take(owner)
        try:
            yield
        finally:
            self.release(owner)


class HeldStream(StreamingResponse):
    """A streamed answer that holds one of its owner's holds (taken before it was made) until it is over, however
    it ends: the last event sent, the client gone, or the connection broken."""

    def __init__(self, tenants: Tenants, owner: str | None, content, **kwargs):
        super().__init__(content, **kwargs)
        self._release = lambda: tenants.release(owner)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class ForwardShare:
    """ASGI layer inside admission (`service.middleware.Observe`): the forward views of each API key in flight, and a
    key at its share waits while another key has one running or waiting. Work-conserving: a key alone is never held
    back. Keys are told apart by a digest of the `Authorization` header (the route authenticates; a wrong key just
    waits in a bucket of its own before its 401); requests without one (the open service) pass straight through."""

    def __init__(self, app: ASGIApp, share: int):
        self.app, self.share = app, share
        self.running: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()
        self._changed: asyncio.Condition | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bucket = _bucket(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if bucket is None or not HEAVY.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        await self._enter(bucket)
        timing.wait(time.perf_counter() - start)  # its `Server-Timing` queue, like admission's line
        try:
            await self.app(scope, receive, send)
        finally:
            await self._leave(bucket)

    def _others_active(self, bucket: str) -> bool:
        return any(n for key, n in (self.running + self.waiting).items() if key != bucket)

    async def _enter(self, bucket: str) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self.waiting[bucket] += 1
            try:
                await self._changed.wait_for(lambda: self.running[bucket] < self.share
                                             or not self._others_active(bucket))
            finally:
                self.waiting[bucket] -= 1
                if not self.waiting[bucket]:
                    del self.waiting[bucket]
            self.running[bucket] += 1

    async def _leave(self, bucket: str) -> None:
        async with self._changed:
            self.running[bucket] -= 1
            if not self.running[bucket]:
                del self.running[bucket]
            self._changed.notify_all()


def _bucket(scope: Scope) -> str | None:
    header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    return hashlib.sha256(header).hexdigest()[:16] if header else None
