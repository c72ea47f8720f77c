"""The tenant's session feed (`sessionChanges`): live changes, and what a RESYNC may have dropped.

A change message names a session; the feed reads the session itself from the database. Unlike the event
log, there is no per-tenant sequence to resume from, so after a RESYNC (the watcher's queue overflowed,
or Redis reconnected: messages may be lost) the feed re-reads the tenant's sessions whose updated_at
is at or after the last sync and sends each one's current state as an UPDATED change, skipping those it
already sent in that state. It does the same after `catchup_seconds` of quiet, as sessionEvents does,
because a publish can also fail on the writer's side alone, and then no RESYNC comes.

The window starts MARGIN before the last sync: updated_at is set before its transaction commits, and
replicas' clocks differ a little. So a watcher never misses a status change; it may see a state twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import orjson

from api.events.bus import EventBus, Resync
from api.events.db_retry import until_database_answers
from api.events.records import tenant_channel
from persistence.database import Database
from persistence.models import AgentSession, utcnow
from persistence.repositories.sessions import SessionRepository

MARGIN = timedelta(seconds=5)
GRACE = timedelta(seconds=1)  # less than MARGIN, so what a quiet sync leaves, the next one reads
PAGE = 500
_Version = tuple[datetime, str, float, str | None]


def _version(row: AgentSession) -> _Version:
    return (row.updated_at, row.status, row.total_cost_usd, row.title)


async def session_changes(
    db: Database, bus: EventBus, tenant_id: str, *, catchup_seconds: float
) -> AsyncIterator[tuple[str, AgentSession]]:
    """(kind, session) for every change of the tenant's sessions, forever."""
    async with bus.watch(tenant_channel(tenant_id)) as watcher:
        # From here on every change reaches the watcher, or the watcher gets RESYNC.
        synced_at = utcnow()
        sent: dict[str, _Version] = {}
        while True:
            item = await watcher.next(timeout=catchup_seconds)
            if item is None or isinstance(item, Resync):
                since, synced_at = synced_at - MARGIN, utcnow()
                # After quiet, leave the last moments to their messages, probably still in flight (the
                # next sync's window covers them); after a RESYNC they are known lost: take everything.
                until = synced_at - GRACE if item is None else None
                # What was sent before the window can't be returned unchanged again: forget it.
                sent = {key: version for key, version in sent.items() if version[0] >= since}
                async for row in _changed_since(db, tenant_id, since):
                    if (until is None or row.updated_at <= until) and sent.get(row.id) != _version(row):
                        sent[row.id] = _version(row)
                        yield "UPDATED", row
                continue
            message = orjson.loads(item)
            found = await until_database_answers(
                partial(_get, db, message["sessionId"], tenant_id),
                what="session_changes",
                tenant_id=tenant_id,
            )
            if found is None and isinstance(message.get("snapshot"), dict):
                # A deleted session: as it was just before.
                yield message["kind"], _from_snapshot(message["snapshot"])
            elif found is not None:
                sent[found.id] = _version(found)
                yield message["kind"], found


def _from_snapshot(data: dict[str, Any]) -> AgentSession:
    values = dict(data)
    for key in ("created_at", "updated_at", "archived_at"):
        if values.get(key) is not None:
            values[key] = datetime.fromisoformat(values[key])
    return AgentSession(**values)


async def _get(db: Database, session_id: str, tenant_id: str) -> AgentSession | None:
    async with db.session() as session:
        return await SessionRepository(session).get(session_id, tenant_id=tenant_id)


async def _changed_since(db: Database, tenant_id: str, since: datetime) -> AsyncIterator[AgentSession]:
    after: tuple[datetime, str] | None = None
    while True:

        async def page(after: tuple[datetime, str] | None = after) -> list[AgentSession]:
            async with db.session() as session:
                rows = await SessionRepository(session).changed_since(
                    tenant_id, since, after=after, limit=PAGE
                )
            return list(rows)

        rows = await until_database_answers(page, what="session_changes", tenant_id=tenant_id)
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = (rows[-1].updated_at, rows[-1].id)
