"""The event log service: commit first, then publish (docs/architecture.md, decision 1)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from api.events import metrics
from api.events.bus import EventBus
from api.events.partial_demand import PartialDemand
from api.events.records import EventRecord, NewEvent, session_channel, tenant_channel
from api.events.shared_reads import SharedLogReads
from persistence.database import Database
from persistence.models import utcnow
from persistence.repositories.events import EventRepository, append_committed
from persistence.repositories.leases import Fence

log = structlog.get_logger(__name__)


class EventLog:
    """Appends events with gapless per-session seqs and wakes subscribers through the bus."""

    def __init__(self, db: Database, bus: EventBus, *, redis_url: str | None = None) -> None:
        self.db = db
        self.bus = bus
        self.shared_reads = SharedLogReads(self)
        self.partial_demand = PartialDemand(redis_url)

    async def close(self) -> None:
        await self.partial_demand.close()

    async def append(
        self, session_id: str, items: Sequence[NewEvent], *, publish: bool = True, fence: Fence | None = None
    ) -> list[EventRecord]:
        """Append in a transaction of its own, commit, then publish (unless the caller will).

        `fence`: the writer holds the session's lease; raises StaleLease (nothing written) if it no
        longer does."""
        if not items:
            return []
        at = utcnow()
        rows = [(item.run_id, item.kind.value, item.payload) for item in items]
        seqs = await append_committed(self.db.engine, session_id, rows, at=at, fence=fence)
        metrics.EVENTS_APPENDED.inc(len(seqs))
        records = [
            EventRecord(session_id, seq, item.run_id, item.kind.value, item.payload, at)
            for seq, item in zip(seqs, items, strict=True)
        ]
        if publish:
            await self.publish(records)
        return records

    async def append_in(
        self,
        session: AsyncSession,
        session_id: str,
        items: Sequence[NewEvent],
        *,
        at: datetime | None = None,
        fence: Fence | None = None,
    ) -> list[EventRecord]:
        """Append inside the caller's unit of work; the caller commits, then calls publish()."""
        rows = await EventRepository(session).append(
            session_id,
            [(item.run_id, item.kind.value, item.payload) for item in items],
            at=at or utcnow(),
            fence=fence,
        )
        metrics.EVENTS_APPENDED.inc(len(rows))
        return [EventRecord.from_model(row) for row in rows]

    async def numbered_in(
        self,
        session: AsyncSession,
        session_id: str,
        items: Sequence[NewEvent],
        *,
        last_seq: int,
        at: datetime,
    ) -> list[EventRecord]:
        """As append_in, for seqs the caller already took from the session's row in this unit of work
        (`last_seq`: the last one; LeaseRepository.claim_to_run)."""
        rows = await EventRepository(session).insert_numbered(
            session_id, [(item.run_id, item.kind.value, item.payload) for item in items], last=last_seq, at=at
        )
        metrics.EVENTS_APPENDED.inc(len(rows))
        return [EventRecord.from_model(row) for row in rows]

    async def publish(self, records: Sequence[EventRecord]) -> None:
        """Queue the committed records' wake-ups; never waits for the bus (api/events/outbox.py)."""
        for record in records:
            # Best effort: a lost wake-up is repaired by the subscribers' catch-up from the log. This
            # replica's subscribers get it at once (a record's text is unique: it names its seq).
            self.bus.publish_soon(session_channel(record.session_id), record.to_wire(), local_first=True)

    async def publish_ephemeral(self, record: EventRecord) -> None:
        """Only while some subscriber asked for token deltas (api/events/partial_demand.py)."""
        if not await self.partial_demand.wanted(record.session_id):
            metrics.EPHEMERAL_SKIPPED.inc()
            return
        self.bus.publish_soon(session_channel(record.session_id), record.to_wire(), local_first=True)

    async def read(self, session_id: str, after_seq: int, limit: int) -> list[EventRecord]:
        async with self.db.session() as session:
            rows = await EventRepository(session).list_after(session_id, after_seq, limit)
        return [EventRecord.from_model(row) for row in rows]

    async def read_of_tenant(
        self, session_id: str, after_seq: int, limit: int, *, tenant_id: str
    ) -> list[EventRecord] | None:
        """As read, or None when the session does not exist or is another tenant's: the check rides
        along with the page (EventRepository.page_of_tenant)."""
        async with self.db.session() as session:
            rows = await EventRepository(session).page_of_tenant(
                session_id, after_seq, limit, tenant_id=tenant_id
            )
        if rows is None:
            return None
        return [EventRecord(*row) for row in rows]

    async def publish_session_change(
        self, tenant_id: str, session_id: str, kind: str, *, snapshot: dict[str, Any] | None = None
    ) -> None:
        """Wake the tenant's `sessionChanges` subscribers; they read the session itself from the database,
        or from `snapshot` for a session that is gone (DELETED)."""
        body: dict[str, Any] = {"kind": kind, "sessionId": session_id}
        if snapshot is not None:
            body["snapshot"] = snapshot
        message = orjson.dumps(body).decode()
        self.bus.publish_soon(tenant_channel(tenant_id), message)
