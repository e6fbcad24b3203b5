"""Fair use of what every API key shares, as the API enforces it: the request rate and the long holds.

- The request rate: a token bucket per key in Redis (`core.rate_limit`), shared by every API process; a key over
  it gets 429 `rate_limited` with `Retry-After`. With no API keys (one tenant) there is no one to be fair to, and
  no limit.
- Holds: an event stream or a `?wait=` keeps one of this process's Redis connections for up to a minute or the
  job's life; each key may keep `max_holds_per_key` at once, so one key cannot take the connection pool that
  every key's requests need. More get 429 `too_many_holds` with `Retry-After`.

The forward views are shared between keys by their admission (`service.admission`), the job queues by the workers
(`core.jobs.queueing`), and what a key may store is bounded by its quotas (`core.stores.usage`).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import redis
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from core.errors import Overloaded
from core.rate_limit import TokenBuckets
from core.settings import Settings

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
