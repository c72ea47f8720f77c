"""The subscription algorithm that loses nothing (docs/architecture.md, decision 1).

Subscribe to the live channel first, replay `seq > afterSeq` from the log, then tail the live channel:
drop what was already delivered, and whenever the live feed shows a hole, reports RESYNC (overflow or a
Redis reconnect) or stays quiet for a while, read the log again from the last delivered seq. The log is
the truth; the bus only makes delivery prompt.

A database outage does not end the stream: each log read waits for the database (api/events/db_retry.py)
and resumes from the cursor, while the watcher's bounded queue overflows into a RESYNC if it must.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import structlog

from api.errors import NotFound
from api.events.bus import EventBus, Resync
from api.events.db_retry import until_database_answers
from api.events.log import EventLog
from api.events.records import EventRecord, session_channel

log = structlog.get_logger(__name__)


async def session_events(
    event_log: EventLog,
    bus: EventBus,
    session_id: str,
    *,
    after_seq: int,
    include_partial: bool,
    page_size: int,
    catchup_seconds: float,
    tenant_id: str | None = None,
) -> AsyncIterator[EventRecord]:
    """Every durable event with seq > after_seq exactly once and in order, then live, forever.

    `tenant_id`: raise NotFound, before anything is yielded, unless the session is that tenant's; the
    check rides along with the replay's first read rather than costing a transaction of its own before
    the subscription (a new session's, on the way to its first answer, or a client's on every turn)."""
    last = after_seq
    shared = event_log.shared_reads
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(bus.watch(session_channel(session_id)))
        if include_partial:
            # Before the replay: deltas are published only while someone wants them.
            await stack.enter_async_context(event_log.partial_demand.wanted_here(session_id))
        async for record in _read_log(event_log, session_id, last, page_size, tenant_id):
            last = record.seq
            yield record
        shared.join(session_id)
        stack.callback(shared.leave, session_id)
        while True:
            item = await watcher.next(timeout=catchup_seconds)
            if item is None or isinstance(item, Resync):
                # Quiet for a while, or the bus says it may have dropped messages: the log decides,
                # through a read shared with this replica's other subscriptions of the session.
                not_before = loop.time() - catchup_seconds if item is None else watcher.resync_at
                for record in await shared.after(
                    session_id, last, not_before=not_before, page_size=page_size
                ):
                    last = record.seq
                    yield record
                continue
            record = EventRecord.from_wire(item)
            if record.ephemeral:
                # A token delta belongs right after the durable event it follows; behind that, skip it:
                # the durable AssistantMessage that completes it will come from the log.
                if include_partial and record.seq == last:
                    yield record
                continue
            if record.seq <= last:
                continue
            if record.seq == last + 1:
                last = record.seq
                yield record
                continue
            # A hole: the missing events were committed before this one was published, so a log read
            # started from now on has them.
            for missing in await shared.after(session_id, last, not_before=loop.time(), page_size=page_size):
                last = missing.seq
                yield missing


async def _read_log(
    event_log: EventLog, session_id: str, after_seq: int, page_size: int, tenant_id: str | None = None
) -> AsyncIterator[EventRecord]:
    cursor = after_seq
    # The first page checks the session's tenant on the way (None: not the tenant's, or no such session).
    check = tenant_id
    while True:
        read: Callable[[], Awaitable[list[EventRecord] | None]]
        if check is not None:
            read = partial(event_log.read_of_tenant, session_id, cursor, page_size, tenant_id=check)
        else:
            read = partial(event_log.read, session_id, cursor, page_size)
        page = await until_database_answers(read, what="session_events", session_id=session_id)
        if page is None:
            raise NotFound("Session", session_id)
        check = None
        for record in page:
            cursor = record.seq
            yield record
        if len(page) < page_size:
            return
