"""Starting and interrupting runs: validated, written (with audit) first, then routed to a replica."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from api import audit
from api.auth import Principal
from api.control.budgets import DailyBudgets
from api.control.commands import Interrupt
from api.control.router import CommandRouter
from api.errors import NotFound, PolicyViolation, SessionBusy
from api.events.log import EventLog
from api.events.records import EventRecord
from api.limits import Limits
from api.runtime import lifecycle
from api.runtime.policy import RunOptions, RunRequest, apply_policy
from api.runtime.run_manager import RunManager, StartReservation
from api.runtime.session_actor import FORCED_STOP_ERROR
from api.runtime.tool_policy import PolicyBook
from api.runtime.warm_pool import WarmCli
from api.settings import Settings
from persistence.models import AgentSession, Run, utcnow
from persistence.repositories.leases import LeaseRepository
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository

TITLE_CHARS = 80
# How often interruptRun looks at the run while it waits for it to settle.
SETTLE_POLL_SECONDS = 0.1


class InterruptOutcome(StrEnum):
    # It was running, and the agent stopped when told to.
    INTERRUPTED = "INTERRUPTED"
    # It was still queued and will never run, or its CLI ignored the interrupt and was stopped.
    ABORTED = "ABORTED"
    # It had ended, or ended on its own before the interrupt took.
    ALREADY_FINISHED = "ALREADY_FINISHED"


class _LeaseMoved(Exception):
    """A run meant to begin on the session's CLI here found the session's lease taken anew."""


@dataclass(frozen=True)
class StartedRun:
    run: Run
    session: AgentSession
    created_session: bool


def _title(prompt: str) -> str:
    line = prompt.strip().splitlines()[0] if prompt.strip() else ""
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class RunControl:
    def __init__(self, settings: Settings, event_log: EventLog, manager: RunManager, limits: Limits) -> None:
        self.settings = settings
        self.limits = limits
        self.event_log = event_log
        self.db = event_log.db
        self.manager = manager
        self.policy = PolicyBook.from_settings(settings)
        self.budgets = DailyBudgets(self.policy)
        self.router = CommandRouter(manager)

    async def start_run(self, principal: Principal, request: RunRequest) -> StartedRun:
        options = apply_policy(request, self.settings, self.policy.for_tenant(principal.tenant_name))
        launcher = self.manager.launcher
        if self.settings.execute_runs and launcher.unavailable is not None:
            # Nothing is written: a run accepted here could only wait for a replica that can confine it.
            raise PolicyViolation(
                f"this server cannot run agents in a sandbox: {launcher.unavailable}", rule="sandbox"
            )
        now = utcnow()
        to_interrupt: list[str] = []
        pool = self.manager.warm_pool
        # A new session on options a pooled CLI was started with takes that CLI and its session id.
        warm = pool.take(principal.tenant_id, options.to_json()) if request.session_id is None else None
        # A run whose CLI is live here and idle (a follow-up, or a pooled CLI's first run) begins as it
        # is queued, in the same transaction, and its prompt goes to the CLI as soon as that commits:
        # no dispatcher round, no second transaction before the agent starts working.
        reservation = None
        if warm is not None:
            reservation = self.manager.reserve_start(warm.session_id, pooled=True)
        elif request.session_id is not None:
            reservation = self.manager.reserve_start(request.session_id)
        else:
            # A new session that can begin here at once: its CLI starts now, while the session and its
            # run are written, and is the session's as a pooled one would be (api/runtime/early_start.py).
            early = await self.manager.start_early(principal.tenant_id, options)
            if early is not None:
                warm, reservation = early
        # Chosen here, so a follow-up's prompt can go to its live CLI while the transaction commits.
        ids = (str(uuid.uuid4()), str(uuid.uuid4()))
        try:
            if reservation is not None and reservation.actor is not None:
                # Its model calls and its log wait for the commit; a begin that fails undoes it
                # (RunManager.cancel_start). docs/architecture.md, decision 15.
                await reservation.actor.send_ahead(*ids, request.prompt, principal.tenant_id, options)
            try:
                run, fresh, records, created = await self._write_run(
                    principal, request, options, now, warm, to_interrupt, reservation, ids
                )
            except _LeaseMoved:
                # The session's lease is no longer the one its CLI here runs under: queue the run.
                assert reservation is not None
                await self.manager.cancel_start(reservation)
                reservation = None
                to_interrupt.clear()
                run, fresh, records, created = await self._write_run(
                    principal, request, options, now, warm, to_interrupt, None, ids
                )
        except BaseException:
            if reservation is not None:
                await asyncio.shield(self.manager.cancel_start(reservation))
            if warm is not None and warm.binding.actor is None:
                # No session was made of it (its folders are new and empty, so removing them is safe
                # even if the commit went through unseen: the session's first CLI makes them again).
                pool.discard(warm, remove_files=True)
                if warm.early:
                    self.manager.early.refused(principal.tenant_id)
            raise
        if created:
            pool.note_new_session(principal.tenant_id, principal.tenant_name)
        await self.event_log.publish(records)
        await self.event_log.publish_session_change(
            principal.tenant_id, fresh.id, "CREATED" if created else "STATUS_CHANGED"
        )
        for run_id in to_interrupt:
            await self.interrupt_run(
                principal, run_id, reason="superseded by a new run (onBusy: INTERRUPT)", wait=False
            )
        if run.status == "QUEUED":
            await self.manager.announce_work()
        return StartedRun(run=run, session=fresh, created_session=created)

    async def _write_run(
        self,
        principal: Principal,
        request: RunRequest,
        options: RunOptions,
        now: datetime,
        warm: WarmCli | None,
        to_interrupt: list[str],
        reservation: StartReservation | None,
        ids: tuple[str, str],
    ) -> tuple[Run, AgentSession, list[EventRecord], bool]:
        """The run (and a new session) in one transaction, with the limits checked inside it; with a
        `reservation`, begun here in the same transaction, under the session's lease, unless the session
        has other runs to finish first. Raises _LeaseMoved (nothing written) when the lease is not the
        one the reserved CLI runs under."""
        async with self.db.session() as session:
            sessions, runs = SessionRepository(session), RunRepository(session)
            # Before anything is written: a refused run leaves no trace.
            await self.budgets.check(session, principal, now)
            created = request.session_id is None
            warm_token: int | None = None
            fresh: AgentSession | None = None
            claim_sent = 0.0
            if request.session_id is None:
                row = await sessions.create(
                    session_id=warm.session_id if warm is not None else str(uuid.uuid4()),
                    tenant_id=principal.tenant_id,
                    title=request.title or _title(request.prompt),
                    at=now,
                )
                await audit.record(
                    session, actor=principal, action="session.create", target_type="Session", target_id=row.id
                )
            else:
                found = await runs.session_and_active_runs(request.session_id, tenant_id=principal.tenant_id)
                if found is None:
                    raise NotFound("Session", request.session_id)
                row, active = found
                if active and request.on_busy == "REJECT":
                    raise SessionBusy(row.id, active[0])
                if active and request.on_busy == "INTERRUPT":
                    to_interrupt.extend(active)
                if active and reservation is not None:
                    # Runs of this session queued elsewhere (or still settling) go first.
                    await self.manager.cancel_start(reservation)
                    reservation = None
            begin_here = reservation is not None
            run = await runs.create(
                run_id=ids[0],
                session_id=row.id,
                tenant_id=principal.tenant_id,
                prompt=request.prompt,
                prompt_uuid=ids[1],
                options=options.to_json(),
                api_key_id=principal.api_key_id,
                at=now,
                started_on=self.manager.replica if begin_here else None,
            )
            # Rates and the tenant's bound on active runs; RateLimited rolls back all of the above.
            await self.limits.admit_run(principal, session)
            statuses = [lifecycle.status_event(run.id, "QUEUED")]
            if begin_here:
                # The log reads as for any run: queued, then running.
                statuses.append(lifecycle.status_event(run.id, "RUNNING"))
            records: list[EventRecord] | None = None
            if created and warm is not None:
                # Ours from the start: the pooled (or early) CLI lives on this replica, so its run must
                # too. Claimed after the tenant's row, just before the commit: in a burst, startRuns wait
                # seconds for that row, and a lease claimed before the wait was near its end when the
                # commit handed it to the keeper, which gave it up as unrenewable. The lease lasts from
                # this claim, not from the reservation (an early CLI's start came in between).
                claim_sent = self.manager.leases.now()
                if reservation is not None:
                    reservation.claim_sent = claim_sent
                leases = LeaseRepository(session)
                if begin_here:
                    # As for a follow-up begun here: the same statement marks the new session RUNNING
                    # and takes the seqs of the run's two events (one trip to its row, not three).
                    claimed = await leases.claim_to_run(
                        row.id,
                        self.manager.replica,
                        ttl_seconds=self.manager.leases.ttl,
                        at=now,
                        seqs=len(statuses),
                    )
                    if claimed is not None:
                        warm_token, fresh = claimed.token, claimed.session
                        records = await self.event_log.numbered_in(
                            session, row.id, statuses, last_seq=claimed.last_seq, at=now
                        )
                else:
                    warm_token = await leases.claim(
                        row.id, self.manager.replica, ttl_seconds=self.manager.leases.ttl
                    )
            token = warm_token
            if begin_here and warm is None:
                # After the tenant's row, as every startRun locks them. A live lease of ours keeps its
                # token; any other answer means the CLI here is no longer the session's. The same
                # statement marks the session RUNNING and takes the seqs of the run's two events.
                assert reservation is not None
                assert reservation.actor is not None
                reservation.claim_sent = self.manager.leases.now()
                claimed = await LeaseRepository(session).claim_to_run(
                    row.id,
                    self.manager.replica,
                    ttl_seconds=self.manager.leases.ttl,
                    at=now,
                    seqs=len(statuses),
                )
                if claimed is None or claimed.token != reservation.actor.lease_token:
                    raise _LeaseMoved()
                token, fresh = claimed.token, claimed.session
                records = await self.event_log.numbered_in(
                    session, row.id, statuses, last_seq=claimed.last_seq, at=now
                )
            if begin_here and token is None:
                raise _LeaseMoved()
            hook_events: tuple[str, ...] = ()
            if begin_here:
                # What the run's CLI must have been started with: read here rather than by the actor,
                # which then sends the prompt without another round trip.
                hook_events = await self.manager.webhooks.events_for(principal.tenant_id, session)
                # What the tenant's next new session's CLI starts with (EarlyStarts.hook_events).
                self.manager.early.saw_hook_events(principal.tenant_id, hook_events)
                if records is None:
                    await sessions.set_status(row.id, "RUNNING", now)
            elif row.status == "IDLE":
                await sessions.set_status(row.id, "QUEUED", now)
            if records is None:
                records = await self.event_log.append_in(session, row.id, statuses, at=now)
            await audit.record(
                session,
                actor=principal,
                action="run.start" if created else "run.follow_up",
                target_type="Run",
                target_id=run.id,
                details={"sessionId": row.id, "onBusy": request.on_busy, "promptChars": len(request.prompt)},
            )
            if fresh is None:
                # Read before the commit, in the transaction that wrote it (the status changes above are
                # statements, not attribute sets): after the commit the read would begin a transaction
                # of its own, a round trip and a pool checkout more on every run's start. A claim for a
                # run begun here answered the row already.
                fresh = await sessions.get(row.id)
            await session.commit()
            if warm is not None and warm_token is not None:
                # At once, before the dispatcher here can start the session cold.
                self.manager.leases.note_claimed(row.id, warm_token, claim_sent)
                self.manager.install_warm(warm, warm_token, begun=begin_here)
            if begin_here:
                assert reservation is not None
                assert token is not None
                # Before anything else: the prompt is on its way while the answer to the caller is made.
                self.manager.begun_here(reservation, run, token, hook_events, records[-1].seq)
        assert fresh is not None
        return run, fresh, records, created

    async def interrupt_run(
        self, principal: Principal, run_id: str, *, reason: str | None = None, wait: bool = True
    ) -> tuple[Run, InterruptOutcome]:
        """Interrupt a run; with `wait`, answer with the run as it is once the interrupt took effect."""
        async with self.db.session() as session:
            runs = RunRepository(session)
            run = await runs.get(run_id, tenant_id=principal.tenant_id)
            if run is None:
                raise NotFound("Run", run_id)
            if run.status == "RUNNING":
                await runs.request_interrupt(run_id)
            await audit.record(
                session,
                actor=principal,
                action="run.interrupt",
                target_type="Run",
                target_id=run_id,
                details={"statusBefore": run.status, **({"reason": reason} if reason else {})},
            )
            await session.commit()
        if run.status == "QUEUED":
            transition = await lifecycle.finish(
                self.event_log, run_id, status="INTERRUPTED", error=reason, from_statuses=("QUEUED",)
            )
            if transition is not None:
                await lifecycle.announce(self.event_log, transition)
                return transition.run, InterruptOutcome.ABORTED
            # It started meanwhile: interrupt it as a running run.
        elif run.status != "RUNNING":
            return run, InterruptOutcome.ALREADY_FINISHED
        async with self.db.session() as session:
            await RunRepository(session).request_interrupt(run_id)
            await session.commit()
        await self.router.send(Interrupt(session_id=run.session_id, run_id=run_id))
        if wait:
            return await self._settled(run_id)
        async with self.db.session() as session:
            current = await RunRepository(session).get(run_id)
        assert current is not None
        return current, InterruptOutcome.INTERRUPTED

    async def _settled(self, run_id: str) -> tuple[Run, InterruptOutcome]:
        """The run as it stands once it has settled (or the wait is over), and what the interrupt did.

        The owner gives a CLI INTERRUPT_GRACE_SECONDS to stop and then stops its process, so within
        interrupt_wait_seconds the run is terminal unless its replica is unreachable: then it still
        reads RUNNING, with the interrupt recorded for whichever replica settles it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.interrupt_wait_seconds
        while True:
            async with self.db.session() as session:
                current = await RunRepository(session).get(run_id)
            assert current is not None
            if current.status in lifecycle.TERMINAL:
                if current.status == "COMPLETED":
                    return current, InterruptOutcome.ALREADY_FINISHED
                if current.error == FORCED_STOP_ERROR:
                    return current, InterruptOutcome.ABORTED
                return current, InterruptOutcome.INTERRUPTED
            if loop.time() >= deadline:
                return current, InterruptOutcome.INTERRUPTED
            await asyncio.sleep(SETTLE_POLL_SECONDS)
