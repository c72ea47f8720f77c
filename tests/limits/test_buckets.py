"""The counters: a burst of `limit`, then a wait of window/limit; several quotas all or none; Redis shared
by replicas and failing open."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from api.limits import LimitStore, MemoryStore, Quota, RedisStore
from tests.conftest import SHARED_REDIS
from tests.support.servers import free_port, redis_available


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if not redis_available():
        pytest.skip("Redis is not reachable on loopback")
    redis = RedisStore(SHARED_REDIS)
    try:
        yield redis
    finally:
        await redis.close()


def fresh(name: str) -> str:
    return f"test:{name}:{uuid.uuid4().hex}"


async def test_a_burst_of_the_limit_then_a_wait_of_one_interval(store: LimitStore) -> None:
    quota = Quota(fresh("burst"), limit=5, window=60.0)
    taken = [await store.take([quota]) for _ in range(5)]
    refused = await store.take([quota])
    assert taken == [0.0] * 5
    # The next unit comes back window/limit = 12 s after the burst (less the time the burst took).
    assert 10 < refused <= 12


async def test_quotas_taken_together_are_all_or_nothing(store: LimitStore) -> None:
    key, tenant = Quota(fresh("key"), 10, 60.0), Quota(fresh("tenant"), 1, 60.0)
    assert await store.take([key, tenant]) == 0
    assert await store.take([key, tenant]) > 0
    # The refusal spent nothing of the key's quota: 9 more fit.
    assert [await store.take([key]) for _ in range(9)] == [0.0] * 9
    assert await store.take([key]) > 0


async def test_two_clients_of_one_redis_share_a_limit() -> None:
    if not redis_available():
        pytest.skip("Redis is not reachable on loopback")
    quota = Quota(fresh("shared"), limit=2, window=60.0)
    a, b = RedisStore(SHARED_REDIS), RedisStore(SHARED_REDIS)
    try:
        assert await a.take([quota]) == 0
        assert await b.take([quota]) == 0
        assert await a.take([quota]) > 0
        assert await b.take([quota]) > 0
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_redis_fails_open_and_is_not_asked_again_at_once() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", retry_after=30.0)
    quota = Quota(fresh("down"), limit=1, window=60.0)
    failed_open = REGISTRY.get_sample_value("agent_rate_limit_failed_open_total") or 0.0
    try:
        started = time.monotonic()
        answers = [await store.take([quota]) for _ in range(20)]
        elapsed = time.monotonic() - started
    finally:
        await store.close()
    assert answers == [0.0] * 20
    assert REGISTRY.get_sample_value("agent_rate_limit_failed_open_total") == failed_open + 20
    # Only the first take tried to connect; the others did not wait for Redis at all.
    assert elapsed < 5


async def test_pruning_the_memory_store_keeps_every_live_count() -> None:
    store = MemoryStore()
    store.PRUNE_AT = 3
    quotas = [Quota(fresh(f"k{n}"), limit=1, window=60.0) for n in range(10)]
    assert [await store.take([quota]) for quota in quotas] == [0.0] * 10
    assert all([await store.take([quota]) > 0 for quota in quotas])


async def test_a_fresh_key_with_a_limit_of_one_is_taken_at_any_clock_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At this monotonic reading `now + 60 - 60 - now` is 7e-12, not 0: the first take was refused.
    monkeypatch.setattr("api.limits.buckets.time.monotonic", lambda: 65522.47531505132)
    store = MemoryStore()
    assert await store.take([Quota(fresh("one"), limit=1, window=60.0)]) == 0.0
    assert await store.take([Quota(fresh("two"), limit=1, window=60.0)]) == 0.0
