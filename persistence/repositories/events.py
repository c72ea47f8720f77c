"""The per-session event log: append with gapless seq allocation, read by cursor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import AgentSession, Event


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(
        self,
        session_id: str,
        items: Sequence[tuple[str | None, str, dict[str, Any]]],
        *,
        at: datetime,
    ) -> list[Event]:
        """Append `(run_id, kind, payload)` items with the next seqs, in one statement pair.

        The UPDATE … RETURNING takes the session row's lock until commit, so two writers cannot
        interleave: seqs are gapless and committed in order.
        """
        if not items:
            return []
        result = await self.session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id)
            .values(last_seq=AgentSession.last_seq + len(items), updated_at=at)
            .returning(AgentSession.last_seq)
        )
        last = result.scalar_one()
        first = last - len(items) + 1
        events = [
            Event(
                session_id=session_id, seq=first + i, run_id=run_id, kind=kind, payload=payload, created_at=at
            )
            for i, (run_id, kind, payload) in enumerate(items)
        ]
        self.session.add_all(events)
        await self.session.flush()
        return events

    async def list_after(self, session_id: str, after_seq: int, limit: int) -> Sequence[Event]:
        result = await self.session.execute(
            sa.select(Event)
            .where(Event.session_id == session_id, Event.seq > after_seq)
            .order_by(Event.seq)
            .limit(limit)
        )
        return result.scalars().all()

    async def list_range(self, session_id: str, after_seq: int, up_to_seq: int) -> Sequence[Event]:
        result = await self.session.execute(
            sa.select(Event)
            .where(Event.session_id == session_id, Event.seq > after_seq, Event.seq <= up_to_seq)
            .order_by(Event.seq)
        )
        return result.scalars().all()
