"""Permission requests: created by the replica running the session, decided from any replica.

Every status change is a compare-and-set from PENDING, so a decision, an expiry and a cancellation can
race and exactly one of them wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import PermissionRequest

PENDING = "PENDING"
MAX_LISTED = 500


@dataclass(frozen=True)
class Decision:
    """What a request becomes: ALLOWED or DENIED by a person, EXPIRED or CANCELLED by the server."""

    status: str
    decided_by: str
    at: datetime
    message: str | None = None
    updated_input: dict[str, Any] | None = None
    allow_for_session: bool = False


class PermissionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        request_id: str,
        tenant_id: str,
        session_id: str,
        run_id: str | None,
        tool_name: str,
        tool_use_id: str | None,
        input: dict[str, Any],
        context: dict[str, Any] | None,
        at: datetime,
        expires_at: datetime,
    ) -> PermissionRequest:
        row = PermissionRequest(
            id=request_id,
            tenant_id=tenant_id,
            session_id=session_id,
            run_id=run_id,
            tool_name=tool_name,
            tool_use_id=tool_use_id,
            input=input,
            context=context,
            status=PENDING,
            allow_for_session=False,
            created_at=at,
            expires_at=expires_at,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def get(self, request_id: str, *, tenant_id: str | None = None) -> PermissionRequest | None:
        """The request, or None when it does not exist or belongs to another tenant."""
        row = await self.session.get(PermissionRequest, request_id, populate_existing=True)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            return None
        return row

    async def list(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        status: str | None = None,
        limit: int = MAX_LISTED,
    ) -> Sequence[PermissionRequest]:
        """The tenant's requests, oldest first."""
        stmt = sa.select(PermissionRequest).where(PermissionRequest.tenant_id == tenant_id)
        if session_id is not None:
            stmt = stmt.where(PermissionRequest.session_id == session_id)
        if status is not None:
            stmt = stmt.where(PermissionRequest.status == status)
        stmt = stmt.order_by(PermissionRequest.created_at, PermissionRequest.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def decide(self, request_id: str, decision: Decision) -> bool:
        """PENDING → the decision's status; False when the request was no longer pending."""
        result = await self.session.execute(
            sa.update(PermissionRequest)
            .where(PermissionRequest.id == request_id, PermissionRequest.status == PENDING)
            .values(
                status=decision.status,
                decided_by=decision.decided_by,
                decided_at=decision.at,
                message=decision.message,
                updated_input=decision.updated_input,
                allow_for_session=decision.allow_for_session,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def pending_for_run(self, run_id: str) -> Sequence[str]:
        result = await self.session.execute(
            sa.select(PermissionRequest.id).where(
                PermissionRequest.run_id == run_id, PermissionRequest.status == PENDING
            )
        )
        return result.scalars().all()
