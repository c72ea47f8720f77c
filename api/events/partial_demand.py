"""Who wants token deltas: a run publishes PartialMessage events only while some subscriber of its session
asked for them (includePartialMessages), on any replica.

Deltas are most of a streaming turn's messages and nobody reads them unless asked. A subscription that
wants them registers here for as long as it lives; on Redis it also keeps a short-lived key
``caga:partials:<session>`` alive, so the replica running the session sees the demand. The publisher
asks at most once per CHECK_SECONDS per session (never on the in-process bus: that answer is exact), and
publishes when Redis does not answer in time: a delta too many is cheaper than a dashboard missing them.
So a subscriber on another replica may miss the deltas of its first second; deltas are best effort
anyway (a subscriber that is behind skips them, the durable message completes them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

TTL_SECONDS = 30
REFRESH_SECONDS = 10.0
CHECK_SECONDS = 1.0
REDIS_TIMEOUT = 0.25


def _key(session_id: str) -> str:
    return f"caga:partials:{session_id}"


class PartialDemand:
    def __init__(self, redis_url: str | None) -> None:
        self._local: dict[str, int] = {}
        self._known: dict[str, tuple[bool, float]] = {}
        self._redis: aioredis.Redis | None = (
            aioredis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
            if redis_url
            else None
        )
        self._refresher: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def wanted_here(self, session_id: str) -> AsyncIterator[None]:
        """Held by a subscription that asked for token deltas."""
        self._local[session_id] = self._local.get(session_id, 0) + 1
        try:
            if self._redis is not None:
                await self._mark([session_id])
                if self._refresher is None or self._refresher.done():
                    self._refresher = asyncio.create_task(self._refresh(), name="partial-demand")
            yield
        finally:
            left = self._local.get(session_id, 1) - 1
            if left > 0:
                self._local[session_id] = left
            else:
                self._local.pop(session_id, None)

    async def wanted(self, session_id: str) -> bool:
        """Does any subscriber (here or, with Redis, on any replica) want this session's deltas?"""
        if self._local.get(session_id):
            return True
        if self._redis is None:
            return False
        now = asyncio.get_running_loop().time()
        known = self._known.get(session_id)
        if known is not None and known[1] > now:
            return known[0]
        try:
            answer = bool(await asyncio.wait_for(self._redis.exists(_key(session_id)), REDIS_TIMEOUT))
        except (RedisError, OSError, TimeoutError):
            answer = True
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[session_id] = (answer, now + CHECK_SECONDS)
        return answer

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def _refresh(self) -> None:
        while self._local:
            await asyncio.sleep(REFRESH_SECONDS)
            await self._mark(list(self._local))

    async def _mark(self, sessions: list[str]) -> None:
        assert self._redis is not None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id in sessions:
                    pipe.set(_key(session_id), b"1", ex=TTL_SECONDS)
                await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT * 4)
        except (RedisError, OSError, TimeoutError) as exc:
            # The publisher then sees no key and skips deltas for up to a refresh: best effort, logged.
            log.warning("partial_demand.mark_failed", error=repr(exc)[:200])
