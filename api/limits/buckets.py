"""Where rate counters live: in this process (the embedded default) or in Redis (shared by replicas).

Both use GCRA, the generic cell rate algorithm: a token bucket kept as one number per key, the
"theoretical arrival time" of the next request. `limit` requests per `window` seconds, in a burst of up
to `limit`; each request moves the time on by window/limit; a request that would move it more than one
window past now is refused, and the answer says how long until it would not be.

Several quotas are taken together (the key's and the tenant's): all of them or none, so a refusal by the
tenant's quota does not also spend the key's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from api.limits.metrics import FAILED_OPEN

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Quota:
    """At most `limit` takes per `window` seconds under `key` (a burst of `limit` is allowed)."""

    key: str
    limit: int
    window: float

    @property
    def interval(self) -> float:
        return self.window / self.limit


class LimitStore(Protocol):
    async def take(self, quotas: Sequence[Quota]) -> float:
        """0 when one unit of every quota was taken; otherwise the seconds to wait, and nothing taken."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """Counters of one process: right for the embedded default, which is one process."""

    # Past this many keys, the expired ones are dropped (they hold nothing a fresh key would not).
    PRUNE_AT = 10_000

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._prune_at = self.PRUNE_AT

    async def take(self, quotas: Sequence[Quota]) -> float:
        now = time.monotonic()
        wait = 0.0
        for quota in quotas:
            # Relative to now: `now + interval - window - now` is not exactly 0 in floating point when
            # interval == window (limit 1), which refused a fresh key's first take by a wait of ~1e-12 s.
            backlog = max(self._tat.get(quota.key, now) - now, 0.0)
            wait = max(wait, backlog + (quota.interval - quota.window))
        if wait > 0:
            return wait
        for quota in quotas:
            self._tat[quota.key] = max(self._tat.get(quota.key, now), now) + quota.interval
        if len(self._tat) > self._prune_at:
            self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
            # Many live keys: prune again only when they have doubled, not at every take.
            self._prune_at = max(self.PRUNE_AT, 2 * len(self._tat))
        return 0.0

    async def close(self) -> None:
        return None


# KEYS: the quotas' keys; ARGV: interval and window of each, in the same order. Redis's own clock, so
# replicas whose clocks drift still share one limit. Returns the wait as a string ("0": taken), because
# Lua numbers come back to the client truncated to integers.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  local backlog = 0
  if tat > now then backlog = tat - now else tat = now end
  tats[i] = tat + interval
  -- Relative to now, as MemoryStore.take: a limit of 1 must give exactly 0 for a fresh key.
  local key_wait = backlog + (interval - window)
  if key_wait > wait then wait = key_wait end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tostring(tats[i]), 'PX', math.ceil((tats[i] - now) * 1000) + 1)
end
return '0'
"""


class RedisStore:
    """Counters in Redis, shared by every replica; one atomic script per take.

    A Redis that fails or does not answer within `timeout` must not take the API down: the take is allowed
    (fail open), a warning is logged, and Redis is left alone for `retry_after` seconds so that an outage
    costs each request nothing.
    """

    PREFIX = "caga:limit:"

    def __init__(self, url: str, *, timeout: float = 0.25, retry_after: float = 2.0) -> None:
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._client.register_script(_GCRA)
        self._retry_after = retry_after
        self._skip_until = 0.0
        self._warned_at = 0.0

    async def take(self, quotas: Sequence[Quota]) -> float:
        if not quotas:
            return 0.0
        if time.monotonic() < self._skip_until:
            FAILED_OPEN.inc()
            return 0.0
        args: list[float] = []
        for quota in quotas:
            args += [quota.interval, quota.window]
        try:
            answer = await self._script(keys=[self.PREFIX + q.key for q in quotas], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            FAILED_OPEN.inc()
            now = time.monotonic()
            self._skip_until = now + self._retry_after
            if now - self._warned_at > 30:
                self._warned_at = now
                log.warning("limits.redis_unavailable", error=str(exc) or type(exc).__name__, fail="open")
            return 0.0
        return float(answer)

    async def close(self) -> None:
        await self._client.aclose()
