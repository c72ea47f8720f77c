"""Webhooks: a tenant's endpoints for hook events. Every query is scoped by tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import Webhook

# Read on every run's start: a table statement built once (an ORM one is compiled and set up anew on
# each execution even when it loads no object).
_EVENTS_OF_TENANT = sa.select(cast(sa.Table, Webhook.__table__).c.events).where(
    cast(sa.Table, Webhook.__table__).c.tenant_id == sa.bindparam("tenant_id")
)


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        webhook_id: str,
        tenant_id: str,
        url: str,
        events: list[str],
        secret: str,
        failure_mode: str | None,
        api_key_id: str | None,
        at: datetime,
    ) -> Webhook:
        webhook = Webhook(
            id=webhook_id,
            tenant_id=tenant_id,
            url=url,
            events=events,
            secret=secret,
            failure_mode=failure_mode,
            api_key_id=api_key_id,
            created_at=at,
        )
        self.session.add(webhook)
        await self.session.flush()
        return webhook

    async def get(self, webhook_id: str, *, tenant_id: str) -> Webhook | None:
        result = await self.session.execute(
            sa.select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id)
        )
        return result.scalar_one_or_none()

    async def delete(self, webhook_id: str, *, tenant_id: str) -> bool:
        result = await self.session.execute(
            sa.delete(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id)
        )
        return bool(getattr(result, "rowcount", 0))

    async def list_for_tenant(self, tenant_id: str) -> Sequence[Webhook]:
        result = await self.session.execute(
            sa.select(Webhook).where(Webhook.tenant_id == tenant_id).order_by(Webhook.created_at, Webhook.id)
        )
        return result.scalars().all()

    async def events_of_tenant(self, tenant_id: str) -> list[list[str]]:
        """Each of the tenant's webhooks' events, and nothing else: read on every run's start, where
        loading whole rows (URL, secret) into the session cost CPU for a column the caller ignores."""
        result = await self.session.execute(_EVENTS_OF_TENANT, {"tenant_id": tenant_id})
        return [list(events) for events in result.scalars()]

    async def for_event(self, tenant_id: str, event: str) -> list[Webhook]:
        """The tenant's webhooks for one event. A tenant has a handful: filtered here, portably,
        rather than with a JSON containment operator that differs between PostgreSQL and SQLite."""
        return [webhook for webhook in await self.list_for_tenant(tenant_id) if event in webhook.events]
