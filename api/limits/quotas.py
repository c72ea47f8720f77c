"""What is limited: HTTP requests per key, runs started per key and per tenant, active and queued runs
per tenant.

The rates live in a `LimitStore` (Redis when REDIS_URL is set, so every replica counts against one limit;
this process otherwise). The bound on active runs is a count in the database, taken in the transaction
that queues the run, so it holds across replicas without Redis.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import Principal
from api.errors import RateLimited
from api.limits.buckets import LimitStore, MemoryStore, Quota, RedisStore
from api.limits.metrics import REFUSED
from api.settings import Settings
from persistence.repositories.runs import RunRepository
from persistence.repositories.tenants import TenantRepository

# A tenant at its bound of active runs waits for one to end; nothing says when, so this is a hint.
ACTIVE_RUNS_RETRY_SECONDS = 5.0
# Likewise for a full queue: runs leave it as fast as agents free up, typically within a run's length.
QUEUED_RUNS_RETRY_SECONDS = 10.0


class Limits:
    def __init__(self, settings: Settings, store: LimitStore) -> None:
        self.settings = settings
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        store: LimitStore = RedisStore(settings.redis_url) if settings.redis_url else MemoryStore()
        return cls(settings, store)

    async def close(self) -> None:
        await self.store.close()

    async def check_request(self, principal: Principal) -> None:
        """One HTTP request of this key; RateLimited past RATE_LIMIT_REQUESTS_PER_SECOND."""
        limit = self.settings.rate_limit_requests_per_second
        if limit:
            await self._take("requests", [Quota(f"requests:key:{principal.api_key_id}", limit, 1.0)])

    async def admit_run(self, principal: Principal, session: AsyncSession) -> None:
        """Called in the transaction that has just queued a run (flushed, not committed): RateLimited
        rolls it back. First the tenant's active runs (QUEUED + RUNNING, this one included), then the
        rates of starting runs, per key and per tenant."""
        bound = self.settings.max_active_runs_per_tenant
        queued_bound = self.settings.max_queued_runs_per_tenant
        queued = active = 0
        if bound or queued_bound:
            # Serialises the tenant's concurrent starts on PostgreSQL, so each count sees the others'
            # runs; SQLite has one writer at a time already.
            await TenantRepository(session).lock(principal.tenant_id)
            queued, active = await RunRepository(session).count_queued_and_active_for_tenant(
                principal.tenant_id
            )
        if queued_bound and queued > queued_bound:
            REFUSED.labels(limit="queued_runs_per_tenant").inc()
            raise RateLimited(
                f"the tenant has {queued_bound} runs waiting in the queue, its limit (the replicas' "
                "agents are busy); start more when some have begun",
                retry_after_seconds=QUEUED_RUNS_RETRY_SECONDS,
            )
        if bound and active > bound:
            REFUSED.labels(limit="active_runs_per_tenant").inc()
            raise RateLimited(
                f"the tenant has {bound} runs queued or running, its limit; "
                "start more when some have finished",
                retry_after_seconds=ACTIVE_RUNS_RETRY_SECONDS,
            )
        quotas = []
        if self.settings.rate_limit_runs_per_minute_per_key:
            quotas.append(
                Quota(
                    f"runs:key:{principal.api_key_id}", self.settings.rate_limit_runs_per_minute_per_key, 60.0
                )
            )
        if self.settings.rate_limit_runs_per_minute_per_tenant:
            quotas.append(
                Quota(
                    f"runs:tenant:{principal.tenant_id}",
                    self.settings.rate_limit_runs_per_minute_per_tenant,
                    60.0,
                )
            )
        await self._take("runs started", quotas)

    async def _take(self, what: str, quotas: list[Quota]) -> None:
        if not quotas:
            return
        wait = await self.store.take(quotas)
        if wait > 0:
            REFUSED.labels(limit=what.replace(" ", "_")).inc()
            raise RateLimited(
                f"too many {what}; try again in {wait:.1f} s", retry_after_seconds=round(wait, 3)
            )
