"""What each API key holds in Redis, against its quotas: bytes of uploaded images, and bytes of job files (inputs
and artifacts). Torch-free; used by the image store, the job submission and the workers' job endings.

Every stored item (an image, a job's input file, a job's artifacts) is charged to its owner with the time its
Redis key expires; an item past that time is pruned from the account by the next charge or read. Keys (under the
settings' prefix `P`; `<tenant>` is `_` for the open service's one tenant):

    P usage:<tenant>:<quota>      hash: item → bytes, and `=` → the total of the items held
    P usage:<tenant>:<quota>:exp  sorted set: item → when its Redis key expires (Unix s)

Each charge, refund and read is one Lua script, so API processes and workers charging the same key at once never
lose an update, and a charge that would pass the limit is refused in the same step that would have made it (no
check-then-write race). Charging an item again (the same image uploaded twice) renews its expiry and is never
refused: it adds nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from core.errors import Overloaded
from core.redis_client import redis_errors

IMAGE_BYTES = "image_bytes"
JOB_BYTES = "job_bytes"
NO_LIMIT = -1

# KEYS: hash, expiry set. ARGV: now, item ('' to only prune and read), bytes, expires_at, limit (-1: none),
# key TTL (s). Returns {accepted (1/0), total after}.
_CHARGE = """
local hash, exp = KEYS[1], KEYS[2]
local now, item, bytes = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local expires, limit, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local total = tonumber(redis.call('HGET', hash, '=') or '0')
local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
for _, member in ipairs(gone) do
  total = total - tonumber(redis.call('HGET', hash, member) or '0')
  redis.call('HDEL', hash, member)
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', exp, '-inf', now) end
if total < 0 then total = 0 end
if item == '' then
  redis.call('HSET', hash, '=', total)
  return {1, total}
end
local held = tonumber(redis.call('HGET', hash, item) or '-1')
if held < 0 and limit >= 0 and (total + bytes > limit) then
  redis.call('HSET', hash, '=', total)
  return {0, total}
end
if held >= 0 then total = total - held end
total = total + bytes
redis.call('HSET', hash, item, bytes, '=', total)
local previous = tonumber(redis.call('ZSCORE', exp, item) or '0')
if expires > previous then redis.call('ZADD', exp, expires, item) end
for _, key in ipairs({hash, exp}) do
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
return {1, total}
"""

# KEYS: hash, expiry set. ARGV: item. Returns the total after.
_REFUND = """
local hash, exp, item = KEYS[1], KEYS[2], ARGV[1]
local held = tonumber(redis.call('HGET', hash, item) or '-1')
local total = tonumber(redis.call('HGET', hash, '=') or '0')
if held < 0 then return total end
total = math.max(0, total - held)
redis.call('HDEL', hash, item)
redis.call('ZREM', exp, item)
redis.call('HSET', hash, '=', total)
return total
"""


@dataclass(frozen=True)
class Refused:
    """A charge over a quota: which one, what is held, what the item would add, and the limit (bytes)."""

    quota: str
    held: int
    adding: int
    limit: int

    def error(self) -> Overloaded:
        """429 `quota_exceeded`, with the figures in `details`."""
        return Overloaded(f"this key's {self.quota.replace('_', ' ')} quota is full: it holds {self.held} bytes, "
                          f"this would add {self.adding}, the limit is {self.limit}; wait for some to expire",
                          code="quota_exceeded", retry_after=3600,
                          details={"quota": self.quota, "held": self.held, "adding": self.adding,
                                   "limit": self.limit})


class UsageLedger:
    """Per-tenant byte accounts in Redis (one per quota), kept in step with the items' expiry."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client, self.prefix = client, prefix
        self._charge = client.register_script(_CHARGE)
        self._refund = client.register_script(_REFUND)

    def _keys(self, owner: str | None, quota: str) -> list[str]:
        base = f"{self.prefix}usage:{owner or '_'}:{quota}"
        return [base, f"{base}:exp"]

    def charge(self, owner: str | None, quota: str, item: str, size: int, ttl_s: float, limit: int) -> None:
        """Charge `size` bytes of `item`, held for `ttl_s` from now, to `owner`; 429 `quota_exceeded` when that
        would take the account past `limit` (`NO_LIMIT`: never refused, e.g. artifacts of a job already admitted)."""
        now = time.time()
        args = [repr(now), item, int(size), repr(now + ttl_s), int(limit), int(ttl_s) + 60]
        with redis_errors():
            accepted, total = self._charge(keys=self._keys(owner, quota), args=args)
        if not accepted:
            raise Refused(quota, int(total), int(size), int(limit)).error()

    def refund(self, owner: str | None, quota: str, item: str) -> None:
        """Take `item` off `owner`'s account (a write that failed after its charge)."""
        with redis_errors():
            self._refund(keys=self._keys(owner, quota), args=[item])

    def check(self, owner: str | None, quota: str, limit: int) -> None:
        """429 `quota_exceeded` when `owner` already holds `limit` bytes or more on `quota`."""
        total = self.held(owner, quota)
        if total >= limit:
            raise Refused(quota, total, 0, limit).error()

    def held(self, owner: str | None, quota: str) -> int:
        """Bytes `owner` holds on `quota` now (expired items pruned first)."""
        with redis_errors():
            _, total = self._charge(keys=self._keys(owner, quota), args=[repr(time.time()), "", 0, 0, NO_LIMIT, 0])
        return int(total)
