"""Permission requests on the replica that runs the session: recorded, awaited, and always answered.

The SDK's can_use_tool callback lands in `PermissionBroker.ask`: the request becomes a PENDING row and a
PermissionRequested event, then the callback waits until the row is decided. Decisions are written by
whichever replica took the mutation; this side learns of them through a DecidePermission command (the
bus) or, should that message be lost, by reading the row every `dispatch_poll_seconds`. It fails
closed: only an ALLOWED row lets the tool run; past its deadline a request is EXPIRED, and a run that
ends (interrupt, time limit, lease loss, CLI death, shutdown) CANCELS what it left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from api.events.log import EventLog
from api.events.records import EventKind, EventRecord, NewEvent
from api.runtime.metrics import PERMISSION_WAIT_SECONDS
from api.runtime.sdk_adapter import ToolPermissionAnswer, ToolPermissionAsk
from persistence.models import PermissionRequest, utcnow
from persistence.repositories.leases import Fence, StaleLease
from persistence.repositories.permissions import PENDING, Decision, PermissionRepository
from persistence.repositories.sessions import SessionRepository

log = structlog.get_logger(__name__)

SYSTEM_ACTOR = "system"


def snapshot(row: PermissionRequest) -> dict[str, Any]:
    """The request as JSON: the payload of its events, and what the GraphQL type is built from."""
    return {
        "id": row.id,
        "session_id": row.session_id,
        "run_id": row.run_id,
        "tool_name": row.tool_name,
        "tool_use_id": row.tool_use_id,
        "input": row.input,
        "context": row.context or {},
        "status": row.status,
        "message": row.message,
        "updated_input": row.updated_input,
        "allow_for_session": row.allow_for_session,
        "decided_by": row.decided_by,
        "created_at": row.created_at.isoformat(),
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }


async def settle_in(
    session: AsyncSession, event_log: EventLog, request_id: str, decision: Decision
) -> tuple[PermissionRequest | None, list[EventRecord]]:
    """Decide a PENDING request inside the caller's unit of work, with its PermissionDecided event.

    Returns the request as it now is, and the event records to publish after the commit (none when the
    request was already decided: then the row shows by whom and how)."""
    repository = PermissionRepository(session)
    if not await repository.decide(request_id, decision):
        return await repository.get(request_id), []
    row = await repository.get(request_id)
    assert row is not None
    records = await event_log.append_in(
        session,
        row.session_id,
        [NewEvent(row.run_id, EventKind.PERMISSION_DECIDED, {"request": snapshot(row)})],
        at=decision.at,
    )
    return row, records


def answer_for(row: PermissionRequest) -> ToolPermissionAnswer:
    """What the CLI is told for a decided request. Nothing but ALLOWED lets the tool run."""
    if row.status == "ALLOWED":
        return ToolPermissionAnswer(
            allow=True, updated_input=row.updated_input, allow_for_session=row.allow_for_session
        )
    if row.status == "DENIED":
        return ToolPermissionAnswer(allow=False, message=row.message or "The user denied this tool call.")
    if row.status == "EXPIRED":
        return ToolPermissionAnswer(
            allow=False, message=row.message or "Nobody answered the permission request in time."
        )
    return ToolPermissionAnswer(allow=False, message=row.message or "The permission request was cancelled.")


async def settle(event_log: EventLog, request_ids: Sequence[str], status: str, message: str) -> None:
    """Settle requests as the server (EXPIRED, CANCELLED): one transaction, then the events."""
    if not request_ids:
        return
    records: list[EventRecord] = []
    async with event_log.db.session() as session:
        for request_id in request_ids:
            decision = Decision(status=status, decided_by=SYSTEM_ACTOR, at=utcnow(), message=message)
            _, settled = await settle_in(session, event_log, request_id, decision)
            records.extend(settled)
        await session.commit()
    await event_log.publish(records)


async def cancel_pending(event_log: EventLog, run_id: str, reason: str) -> None:
    """A run is over: what it left pending is CANCELLED (best effort; the caller goes on regardless)."""
    try:
        async with event_log.db.session() as session:
            pending = await PermissionRepository(session).pending_for_run(run_id)
        await settle(event_log, pending, "CANCELLED", reason)
    except Exception:
        log.warning("permission.cancel_failed", run_id=run_id, exc_info=True)


class PermissionBroker:
    """The pending requests of one session actor, and the waits of their tool calls."""

    def __init__(
        self,
        event_log: EventLog,
        session_id: str,
        *,
        timeout_seconds: float,
        poll_seconds: float,
        current_run: Callable[[], tuple[str | None, str | None]],
        before_request: Callable[[], Awaitable[None]],
        fence: Fence | None = None,
        on_lease_lost: Callable[[], None] | None = None,
    ) -> None:
        self.event_log = event_log
        self.db = event_log.db
        self.session_id = session_id
        self.timeout = timedelta(seconds=timeout_seconds)
        self.poll_seconds = poll_seconds
        self._current_run = current_run
        self._before_request = before_request
        self._fence = fence
        self._on_lease_lost = on_lease_lost
        self._waiting: dict[str, asyncio.Event] = {}

    def poke(self, request_id: str) -> bool:
        """A decision may have been written: the waiting call reads its row now."""
        event = self._waiting.get(request_id)
        if event is None:
            return False
        event.set()
        return True

    async def ask(self, ask: ToolPermissionAsk) -> ToolPermissionAnswer:
        run_id, tenant_id = self._current_run()
        # The assistant message that asked for the tool goes in the log before the request does.
        await self._before_request()
        request_id = str(uuid.uuid4())
        # Ready for a decision before anyone can see the request.
        self._waiting[request_id] = asyncio.Event()
        try:
            return await self._ask(request_id, run_id, tenant_id, ask)
        except StaleLease:
            # Another replica holds the session now: this CLI is being stopped; the tool must not run.
            if self._on_lease_lost is not None:
                self._on_lease_lost()
            return ToolPermissionAnswer(allow=False, message="The session moved to another server.")
        finally:
            self._waiting.pop(request_id, None)

    async def _ask(
        self, request_id: str, run_id: str | None, tenant_id: str | None, ask: ToolPermissionAsk
    ) -> ToolPermissionAnswer:
        now = utcnow()
        async with self.db.session() as session:
            if tenant_id is None:
                owner = await SessionRepository(session).get(self.session_id)
                assert owner is not None
                tenant_id = owner.tenant_id
            row = await PermissionRepository(session).create(
                request_id=request_id,
                tenant_id=tenant_id,
                session_id=self.session_id,
                run_id=run_id,
                tool_name=ask.tool_name,
                tool_use_id=ask.tool_use_id,
                input=ask.input,
                context=ask.context or None,
                at=now,
                expires_at=now + self.timeout,
            )
            records = await self.event_log.append_in(
                session,
                self.session_id,
                [NewEvent(run_id, EventKind.PERMISSION_REQUESTED, {"request": snapshot(row)})],
                at=now,
                fence=self._fence,
            )
            await session.commit()
        await self.event_log.publish(records)
        log.info(
            "permission.requested", permission_request_id=request_id, tool_name=ask.tool_name, run_id=run_id
        )
        try:
            decided = await self._await_decision(request_id, now + self.timeout)
        except asyncio.CancelledError:
            # The SDK cancels the callback when the run is interrupted; the request must not stay pending.
            await asyncio.shield(self._settle_quietly([request_id], "CANCELLED", "the run was interrupted"))
            raise
        log.info("permission.answered", permission_request_id=request_id, status=decided.status)
        PERMISSION_WAIT_SECONDS.labels(status=decided.status).observe(
            max(0.0, (utcnow() - now).total_seconds())
        )
        return answer_for(decided)

    async def _await_decision(self, request_id: str, expires_at: datetime) -> PermissionRequest:
        wake = self._waiting[request_id]
        while True:
            remaining = (expires_at - utcnow()).total_seconds()
            if remaining <= 0:
                # Raises if the database is unreachable: the adapter then denies (fail closed).
                seconds = f"{self.timeout.total_seconds():g}"
                await settle(self.event_log, [request_id], "EXPIRED", f"nobody answered within {seconds} s")
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(self.poll_seconds, remaining))
            wake.clear()
            try:
                async with self.db.session() as session:
                    row = await PermissionRepository(session).get(request_id)
            except (SQLAlchemyError, OSError):
                # A database hiccup: keep waiting; the deadline still holds.
                log.warning("permission.read_failed", permission_request_id=request_id, exc_info=True)
                continue
            if row is not None and row.status != PENDING:
                return row
            # Still pending: a lost bus message costs at most one poll interval.

    async def cancel_run(self, run_id: str, reason: str) -> None:
        """The run is over: what it left pending is CANCELLED, and its waiting calls deny."""
        await cancel_pending(self.event_log, run_id, reason)
        for request_id in list(self._waiting):
            self.poke(request_id)

    async def _settle_quietly(self, request_ids: Sequence[str], status: str, message: str) -> None:
        try:
            await settle(self.event_log, request_ids, status, message)
        except Exception:
            log.warning("permission.settle_failed", status=status, exc_info=True)
