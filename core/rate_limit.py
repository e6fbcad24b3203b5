"""A per-tenant request rate limit: a token bucket in Redis, shared by every API process.

Each tenant's bucket holds up to `burst` tokens and gains `rate` tokens a second; a request takes one, and a
request that finds less than one is refused, told how many seconds until one is there. The bucket is a hash
`P rate:<tenant>` {tokens, at} changed by one Lua script that reads Redis's own clock, so replicas on machines
whose clocks differ share it exactly, and two requests can never take the same token.
"""

from __future__ import annotations

import redis.asyncio

# KEYS: the bucket. ARGV: rate (tokens/s), burst. Returns {taken (1/0), seconds until a token (text)}.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1]) or burst
local at = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken, wait = 0, 0
if tokens >= 1 then
  tokens, taken = tokens - 1, 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, tostring(wait)}
"""


class TokenBuckets:
    """One bucket per tenant: `take(tenant)` is None when the request may go, else the seconds to wait."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str, rate: float, burst: int):
        self.prefix, self.rate, self.burst = prefix, rate, burst
        self._take = client.register_script(_TAKE)

    async def take(self, tenant: str) -> float | None:
        taken, wait = await self._take(keys=[f"{self.prefix}rate:{tenant}"], args=[repr(self.rate), self.burst])
        return None if taken else float(wait)
