"""Tenants and their API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import ApiKey, Tenant, utcnow


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_name(self, name: str) -> Tenant | None:
        result = await self.session.execute(sa.select(Tenant).where(Tenant.name == name))
        return result.scalar_one_or_none()

    async def get_or_create(self, name: str) -> Tenant:
        tenant = await self.get_by_name(name)
        if tenant is None:
            tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=utcnow())
            self.session.add(tenant)
            await self.session.flush()
        return tenant

    async def get(self, tenant_id: str) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def lock(self, tenant_id: str) -> None:
        """Hold the tenant's row until the transaction ends (PostgreSQL; SQLite ignores it). FOR NO KEY
        UPDATE: it does not conflict with the key-share locks that inserting a tenant's rows takes."""
        if self.session.get_bind().dialect.name == "sqlite":
            return  # nothing to lock: one writer at a time holds the whole file, and a read costs a trip
        await self.session.execute(
            sa.select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        )


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, *, tenant_id: str, name: str | None, prefix: str, key_hash: str) -> ApiKey:
        key = ApiKey(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            created_at=utcnow(),
        )
        self.session.add(key)
        await self.session.flush()
        return key

    async def get_by_prefix(self, prefix: str) -> tuple[ApiKey, Tenant] | None:
        result = await self.session.execute(
            sa.select(ApiKey, Tenant)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.prefix == prefix)
        )
        row = result.one_or_none()
        return (row[0], row[1]) if row else None

    async def get(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def valid_ids(self, key_ids: Sequence[str]) -> set[str]:
        """Those of ``key_ids`` that exist and are not revoked."""
        result = await self.session.execute(
            sa.select(ApiKey.id).where(ApiKey.id.in_(key_ids), ApiKey.revoked_at.is_(None))
        )
        return set(result.scalars().all())

    async def list(self) -> Sequence[tuple[ApiKey, Tenant]]:
        result = await self.session.execute(
            sa.select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at)
        )
        return [(row[0], row[1]) for row in result.all()]

    async def count(self) -> int:
        result = await self.session.execute(sa.select(sa.func.count()).select_from(ApiKey))
        return int(result.scalar_one())

    async def revoke(self, key: ApiKey, at: datetime) -> None:
        key.revoked_at = at
        await self.session.flush()

    async def touch(self, key_id: str, at: datetime) -> None:
        await self.session.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
