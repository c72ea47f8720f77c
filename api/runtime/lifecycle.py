"""Run status transitions: each one a compare-and-set, an event in the log and a session status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.events.log import EventLog
from api.events.records import EventKind, EventRecord, NewEvent
from persistence.models import Run, utcnow
from persistence.repositories.leases import Fence, LeaseRepository
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository

TERMINAL = ("COMPLETED", "FAILED", "INTERRUPTED")


def status_event(run_id: str, status: str, error: str | None = None) -> NewEvent:
    return NewEvent(run_id, EventKind.RUN_STATUS, {"run_id": run_id, "status": status, "error": error})


@dataclass(frozen=True)
class Transition:
    run: Run
    records: list[EventRecord]
    tenant_id: str
    # begin(): the fencing token of the lease the run executes under.
    lease_token: int | None = None


async def _session_status_after(session: AsyncSession, session_id: str) -> str:
    active = await RunRepository(session).active_for_session(session_id)
    if any(run.status == "RUNNING" for run in active):
        return "RUNNING"
    return "QUEUED" if active else "IDLE"


async def begin(event_log: EventLog, run: Run, *, replica: str, lease_seconds: float) -> Transition | None:
    """QUEUED → RUNNING on this replica, taking the session's lease; None if someone else got there."""
    async with event_log.db.session() as session:
        now = utcnow()
        token = await LeaseRepository(session).claim(run.session_id, replica, ttl_seconds=lease_seconds)
        if token is None:
            return None
        moved = await RunRepository(session).transition(
            run.id,
            from_statuses=["QUEUED"],
            values={"status": "RUNNING", "replica": replica, "started_at": now},
        )
        if not moved:
            await session.rollback()
            return None
        await SessionRepository(session).set_status(run.session_id, "RUNNING", now)
        records = await event_log.append_in(
            session, run.session_id, [status_event(run.id, "RUNNING")], at=now
        )
        # Read back before the commit, not after: the commit is the last statement (as in finish).
        fresh = await RunRepository(session).get(run.id)
        await session.commit()
    assert fresh is not None
    return Transition(fresh, records, fresh.tenant_id, lease_token=token)


async def finish(
    event_log: EventLog,
    run_id: str,
    *,
    status: str,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    cost_usd: float | None = None,
    usage: dict[str, Any] | None = None,
    from_statuses: tuple[str, ...] = ("RUNNING",),
    fence: Fence | None = None,
    orphan: bool = False,
) -> Transition | None:
    """RUNNING (or QUEUED) → a terminal status, with the reason in run.error and in the log.

    `fence`: the run's lease holder writes its outcome; raises StaleLease (nothing written) when the
    lease has moved on. `orphan`: a reaper settles a run whose replica lost the lease; it first fences
    that replica off (LeaseRepository.fence_off), and leaves the run alone if the replica renewed."""
    async with event_log.db.session() as session:
        runs = RunRepository(session)
        run = await runs.get(run_id)
        if run is None:
            return None
        sessions = SessionRepository(session)
        # The session before the run, as begin() takes them (SessionRepository.lock).
        if fence is not None:
            await LeaseRepository(session).check(run.session_id, fence)
        else:
            await sessions.lock(run.session_id)
        if orphan and not await LeaseRepository(session).fence_off(run.session_id, run.replica):
            return None
        now = utcnow()
        values: dict[str, Any] = {"status": status, "finished_at": now, "error": error}
        if result is not None:
            values["result"] = result
        if cost_usd is not None:
            values["cost_usd"] = cost_usd
        if usage is not None:
            values["usage"] = usage
        if not await runs.transition(run_id, from_statuses=list(from_statuses), values=values):
            return None
        if cost_usd:
            await sessions.add_cost(run.session_id, cost_usd)
        await sessions.set_status(run.session_id, await _session_status_after(session, run.session_id), now)
        records = await event_log.append_in(
            session, run.session_id, [status_event(run_id, status, error)], at=now, fence=fence
        )
        # The commit is the last statement. A read after it could fail in an outage that began as it
        # committed: the caller would take a written outcome for a failed write, retry until it gave up
        # on the session, and strand a follow-up already begun on its CLI (decision 13). Read inside the
        # transaction, the row is also the one written: it is locked until the commit.
        fresh = await runs.get(run_id)
        await session.commit()
    assert fresh is not None
    return Transition(fresh, records, fresh.tenant_id)


async def announce(
    event_log: EventLog, transition: Transition | None, change: str = "STATUS_CHANGED"
) -> None:
    """Publish a committed transition: the session's events and the tenant's session feed."""
    if transition is None:
        return
    await event_log.publish(transition.records)
    await event_log.publish_session_change(transition.tenant_id, transition.run.session_id, change)
