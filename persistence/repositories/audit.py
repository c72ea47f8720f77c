"""The audit trail: append-only, read newest first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import AuditEntry

_INSERT = cast(sa.Table, AuditEntry.__table__).insert()


@dataclass(frozen=True)
class AuditQuery:
    tenant_id: str
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        tenant_id: str,
        actor: str,
        action: str,
        target_type: str,
        target_id: str,
        details: dict[str, Any] | None,
        at: datetime,
    ) -> None:
        """One entry, written at once with a Core INSERT (every control action writes one, a run's start
        too, where the unit of work's flush of an object cost more than the statement)."""
        await self.session.execute(
            _INSERT,
            {
                "tenant_id": tenant_id,
                "actor": actor,
                "action": action,
                "target_type": target_type,
                "target_id": target_id,
                "details": details,
                "at": at,
            },
        )

    async def list(self, query: AuditQuery, *, before_id: int | None, limit: int) -> Sequence[AuditEntry]:
        stmt = sa.select(AuditEntry).where(AuditEntry.tenant_id == query.tenant_id)
        if query.action:
            stmt = stmt.where(AuditEntry.action == query.action)
        if query.target_type:
            stmt = stmt.where(AuditEntry.target_type == query.target_type)
        if query.target_id:
            stmt = stmt.where(AuditEntry.target_id == query.target_id)
        if query.actor:
            stmt = stmt.where(AuditEntry.actor == query.actor)
        if query.since:
            stmt = stmt.where(AuditEntry.at >= query.since)
        if query.until:
            stmt = stmt.where(AuditEntry.at < query.until)
        if before_id is not None:
            stmt = stmt.where(AuditEntry.id < before_id)
        result = await self.session.execute(stmt.order_by(AuditEntry.id.desc()).limit(limit))
        return result.scalars().all()
