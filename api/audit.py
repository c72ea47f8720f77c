"""Every control action leaves an audit entry, written in the same transaction as the action."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import Principal
from persistence.models import utcnow
from persistence.repositories.audit import AuditRepository


async def record(
    session: AsyncSession,
    *,
    actor: Principal | str,
    tenant_id: str | None = None,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an entry to the caller's unit of work; it commits with the action or not at all."""
    if isinstance(actor, Principal):
        tenant_id, actor_name = actor.tenant_id, actor.actor
    else:
        actor_name = actor
    if tenant_id is None:
        raise ValueError("tenant_id is required when the actor is not a principal")
    await AuditRepository(session).add(
        tenant_id=tenant_id,
        actor=actor_name,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details,
        at=utcnow(),
    )
