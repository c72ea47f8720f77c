"""The per-session event log: append with gapless seq allocation, read by cursor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import AgentSession, Event
from persistence.repositories.leases import Fence, StaleLease

# The `events` query's statements, built once with their values as parameters (building them and their
# cache keys on every read was a noticeable share of its CPU), and with the tables' columns rather than
# the mapped classes' attributes: a statement of the ORM's goes through its compile and result setup on
# every execution even when it loads no object.
_SESSIONS = cast(sa.Table, AgentSession.__table__).c
_EVENTS = cast(sa.Table, Event.__table__).c
_TENANTS_SESSION = sa.select(_SESSIONS.id).where(
    _SESSIONS.id == sa.bindparam("session_id"), _SESSIONS.tenant_id == sa.bindparam("tenant_id")
)
_PAGE: sa.Select[Any] = (
    sa.select(
        _EVENTS.session_id, _EVENTS.seq, _EVENTS.run_id, _EVENTS.kind, _EVENTS.payload, _EVENTS.created_at
    )
    .where(_EVENTS.session_id == sa.bindparam("session_id"), _EVENTS.seq > sa.bindparam("after_seq"))
    .order_by(_EVENTS.seq)
    .limit(sa.bindparam("limit"))
)


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(
        self,
        session_id: str,
        items: Sequence[tuple[str | None, str, dict[str, Any]]],
        *,
        at: datetime,
        fence: Fence | None = None,
    ) -> list[Event]:
        """Append `(run_id, kind, payload)` items with the next seqs, in one statement pair.

        The UPDATE … RETURNING takes the session row's lock until commit, so two writers cannot
        interleave: seqs are gapless and committed in order. With a `fence` (a lease holder's write)
        the same UPDATE checks the lease's token, and StaleLease means nothing was written.
        """
        if not items:
            return []
        condition = AgentSession.id == session_id
        if fence is not None:
            condition = sa.and_(condition, fence.matches())
        result = await self.session.execute(
            sa.update(AgentSession)
            .where(condition)
            .values(last_seq=AgentSession.last_seq + len(items), updated_at=at)
            .returning(AgentSession.last_seq)
        )
        last = result.scalar_one_or_none()
        if last is None:
            if fence is not None:
                raise StaleLease(session_id, fence)
            raise sa.exc.NoResultFound(f"no session {session_id}")
        events = self.add_numbered(session_id, items, last=last, at=at)
        await self.session.flush()
        return events

    def add_numbered(
        self,
        session_id: str,
        items: Sequence[tuple[str | None, str, dict[str, Any]]],
        *,
        last: int,
        at: datetime,
    ) -> list[Event]:
        """Add events whose seqs the caller took from the session's row in this transaction (`last`: the
        last one taken), without a flush: they are inserted with the unit of work's next one."""
        first = last - len(items) + 1
        events = [
            Event(
                session_id=session_id, seq=first + i, run_id=run_id, kind=kind, payload=payload, created_at=at
            )
            for i, (run_id, kind, payload) in enumerate(items)
        ]
        self.session.add_all(events)
        return events

    async def list_after(self, session_id: str, after_seq: int, limit: int) -> Sequence[Event]:
        result = await self.session.execute(
            sa.select(Event)
            .where(Event.session_id == session_id, Event.seq > after_seq)
            .order_by(Event.seq)
            .limit(limit)
        )
        return result.scalars().all()

    async def page_of_tenant(
        self, session_id: str, after_seq: int, limit: int, *, tenant_id: str
    ) -> Sequence[sa.Row[Any]] | None:
        """Up to `limit` events with seq > `after_seq` as plain rows (session_id, seq, run_id, kind,
        payload, created_at), or None when the session does not exist or belongs to another tenant.

        For the `events` query: one database session for the check and the page, and rows rather than
        ORM objects (a page of 100 is read-only; building and tracking 100 objects was a noticeable share
        of the query's CPU)."""
        identity = {"session_id": session_id, "tenant_id": tenant_id}
        found = await self.session.execute(_TENANTS_SESSION, identity)
        if found.first() is None:
            return None
        result = await self.session.execute(
            _PAGE, {"session_id": session_id, "after_seq": after_seq, "limit": limit}
        )
        rows: Sequence[sa.Row[Any]] = result.all()
        return rows

    async def list_range(self, session_id: str, after_seq: int, up_to_seq: int) -> Sequence[Event]:
        result = await self.session.execute(
            sa.select(Event)
            .where(Event.session_id == session_id, Event.seq > after_seq, Event.seq <= up_to_seq)
            .order_by(Event.seq)
        )
        return result.scalars().all()
