"""The run manager: admits queued runs on this replica, within a concurrency bound.

The queue lives in the database (runs in status QUEUED), so any replica can take a run and a lost
wake-up only delays. A run executes on the replica that holds its session's lease (docs/architecture.md,
decision 4); a replica that dies lets its leases lapse, and its running runs are marked FAILED by whoever
notices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import orjson
import structlog

from api.control import commands
from api.control.commands import Command, RewindFiles
from api.events.bus import EventBus, Resync
from api.events.log import EventLog
from api.runtime import lifecycle, metrics, permissions
from api.runtime.mcp_registry import McpRegistry
from api.runtime.session_actor import SessionActor
from api.sandbox.launcher import AgentLauncher
from api.settings import Settings
from api.webhooks.dispatcher import WebhookDispatcher
from persistence.database import Database
from persistence.models import utcnow
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository

log = structlog.get_logger(__name__)

CONTROL_CHANNEL = "control:runs"


class RunManager:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        event_log: EventLog,
        bus: EventBus,
        launcher: AgentLauncher,
    ) -> None:
        self.settings = settings
        self.db = db
        self.event_log = event_log
        self.bus = bus
        self.replica = settings.replica_id
        self.launcher = launcher
        self.webhooks = WebhookDispatcher(settings, db)
        # Validated at start: a broken registry stops the server with the file's name.
        self.mcp_registry = McpRegistry.load(settings.mcp_servers_file)
        self._actors: dict[str, SessionActor] = {}
        self._running = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._lease = timedelta(seconds=settings.lease_seconds)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.tenants_dir.mkdir(parents=True, exist_ok=True)
        metrics.LIVE_AGENTS_LIMIT.set(self.settings.effective_max_live_agents)
        control_ready = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="run-dispatch"),
            asyncio.create_task(self._lease_loop(), name="run-leases"),
            asyncio.create_task(self._control_loop(control_ready), name="run-control"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(control_ready.wait(), timeout=10)
        self.nudge()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        actors = list(self._actors.values())
        for actor in actors:
            actor.task.cancel()
        await asyncio.gather(*(actor.task for actor in actors), return_exceptions=True)
        await self.webhooks.close()

    # -- what the control plane calls ----------------------------------------------------------------

    def nudge(self) -> None:
        self._wake.set()

    async def announce_work(self) -> None:
        """A run was queued: wake this replica's dispatcher and, through the bus, every other one."""
        self.nudge()
        # Through the outbox: a silent Redis must not hold up startRun (the others also poll).
        self.bus.publish_soon(CONTROL_CHANNEL, orjson.dumps({"type": "dispatch"}).decode())

    async def deliver_local(self, command: Command) -> bool:
        """Hand a command to this replica's actor for its session; False when there is none here."""
        actor = self._actors.get(command.session_id)
        if actor is None or actor.closing:
            return False
        return await actor.handle(command)

    async def adopt(self, session_id: str) -> bool:
        """Start an actor for a session whose agent runs nowhere, so it can take a command (a rewind
        after the CLI stopped): it takes the session's lease first, so no other replica runs the
        session meanwhile. False when another replica holds the lease (send the command there)."""
        actor = self._actors.get(session_id)
        if actor is not None and not actor.closing:
            return True
        if not self.can_execute:
            return False
        async with self.db.session() as session:
            claimed = await SessionRepository(session).claim_lease(
                session_id, self.replica, now=utcnow(), ttl=self._lease
            )
            await session.commit()
        if not claimed:
            return False
        actor = self._actors.get(session_id)
        if actor is None or actor.closing:
            self._actors[session_id] = SessionActor(self, session_id)
        return True

    @property
    def can_execute(self) -> bool:
        """Whether this replica may start agents (EXECUTE_RUNS and a working sandbox, or SANDBOX=off)."""
        return self.settings.execute_runs and self.launcher.ready

    async def _adopt_and_deliver(self, command: RewindFiles) -> None:
        """A rewind for a session nobody runs, sent to every replica: the one that takes its lease acts."""
        if await self.adopt(command.session_id):
            await self.deliver_local(command)

    # -- what actors call ----------------------------------------------------------------------------

    def forget_actor(self, actor: SessionActor) -> None:
        if self._actors.get(actor.session_id) is actor:
            del self._actors[actor.session_id]

    def run_finished(self) -> None:
        self._running = max(0, self._running - 1)
        self.nudge()

    async def release_lease(self, session_id: str) -> None:
        if session_id in self._actors:
            return
        try:
            async with self.db.session() as session:
                await SessionRepository(session).release_lease(session_id, self.replica)
                await session.commit()
        except Exception:
            # An unreleased lease simply expires.
            log.warning("lease.release_failed", session_id=session_id, exc_info=True)
        self.nudge()

    @property
    def running(self) -> int:
        return self._running

    # -- loops ---------------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.dispatch_poll_seconds)
            self._wake.clear()
            try:
                await self._reap_orphans()
                await self._poll_interrupts()
                await self._admit()
            except Exception:
                # A database hiccup must not end dispatching; the next wake-up tries again.
                log.exception("dispatch.failed")

    async def _admit(self) -> None:
        if not self.settings.execute_runs or not self.launcher.ready:
            # Queued runs wait for a replica that can start agents safely.
            return
        free = self.settings.max_concurrent_runs - self._running
        if free <= 0:
            return
        async with self.db.session() as session:
            candidates = await RunRepository(session).claimable(self.replica, now=utcnow(), limit=free)
        for run in candidates:
            if self._running >= self.settings.max_concurrent_runs:
                return
            actor = self._actors.get(run.session_id)
            if actor is not None and (actor.busy or actor.closing):
                continue
            if (actor is None or not actor.has_agent) and not self._room_for_an_agent():
                # Every CLI the budget allows is in use: the run waits QUEUED (here or elsewhere).
                return
            transition = await lifecycle.begin(self.event_log, run, replica=self.replica, lease=self._lease)
            if transition is None:
                continue
            self._running += 1
            await lifecycle.announce(self.event_log, transition)
            actor = self._actors.get(run.session_id)
            if actor is None or actor.closing:
                actor = SessionActor(self, run.session_id)
                self._actors[run.session_id] = actor
            actor.submit(transition.run)

    def live_agents(self) -> int:
        return sum(1 for actor in self._actors.values() if actor.has_agent)

    def _room_for_an_agent(self) -> bool:
        """Whether one more CLI fits in MAX_LIVE_AGENTS, evicting the least recently used idle one if
        that is what it takes. Idle CLIs are a cache: memory, not state (the transcript is on disk)."""
        if self.live_agents() < self.settings.effective_max_live_agents:
            return True
        idle = [actor for actor in self._actors.values() if actor.has_agent and not actor.busy]
        for actor in sorted(idle, key=lambda actor: actor.last_active):
            if actor.evict():
                metrics.AGENTS_EVICTED.inc()
                log.info("agent.evicted", session_id=actor.session_id, live=self.live_agents())
                return True
        return False

    async def _reap_orphans(self) -> None:
        async with self.db.session() as session:
            orphans = await RunRepository(session).orphaned(now=utcnow())
        for run in orphans:
            if run.session_id in self._actors:
                continue
            transition = await lifecycle.finish(
                self.event_log,
                run.id,
                status="FAILED",
                error=f"replica {run.replica} stopped responding during the run (its lease expired)",
            )
            if transition is not None:
                log.warning("run.orphan_failed", run_id=run.id, replica=run.replica)
                await permissions.cancel_pending(
                    self.event_log, run.id, "the replica running the session stopped responding"
                )
            await lifecycle.announce(self.event_log, transition)

    async def _poll_interrupts(self) -> None:
        busy = [actor.current_run.id for actor in self._actors.values() if actor.current_run is not None]
        if not busy:
            return
        async with self.db.session() as session:
            runs = await RunRepository(session).get_many(busy)
        for run in runs:
            if run.interrupt_requested:
                self._interrupt_local(run.id)

    def _interrupt_local(self, run_id: str) -> bool:
        return any(actor.interrupt(run_id) for actor in self._actors.values())

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            if not self._actors:
                continue
            held = list(self._actors)
            try:
                async with self.db.session() as session:
                    renewed = await SessionRepository(session).renew_leases(
                        self.replica, held, now=utcnow(), ttl=self._lease
                    )
                    await session.commit()
            except Exception:
                # Retried on the next beat, well within the lease.
                log.warning("lease.renew_failed", exc_info=True)
                continue
            for session_id in set(held) - renewed:
                actor = self._actors.get(session_id)
                if actor is not None and not actor.closing:
                    # Another replica reaped our run and may start the session's CLI: two must never run.
                    log.error("lease.lost", session_id=session_id)
                    actor.abandon(f"replica {self.replica} lost the session's lease during the run")

    async def _control_loop(self, ready: asyncio.Event) -> None:
        while True:
            try:
                async with self.bus.watch(CONTROL_CHANNEL) as watcher:
                    ready.set()
                    while True:
                        item = await watcher.next(timeout=None)
                        if item is None or isinstance(item, Resync):
                            self.nudge()
                            continue
                        message = orjson.loads(item)
                        if message.get("type") == commands.MESSAGE_TYPE:
                            command = commands.decode(message)
                            delivery: Coroutine[Any, Any, Any] | None = None
                            if command is not None and command.session_id in self._actors:
                                delivery = self.deliver_local(command)
                            elif isinstance(command, RewindFiles) and self.can_execute:
                                delivery = self._adopt_and_deliver(command)
                            if delivery is not None:
                                # Its own task: a model switch must not hold up the next interrupt.
                                task = asyncio.create_task(delivery)
                                self._deliveries.add(task)
                                task.add_done_callback(self._deliveries.discard)
                        else:
                            self.nudge()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database poll covers the gap; try the bus again shortly.
                log.warning("control.watch_failed", exc_info=True)
                ready.set()
                await asyncio.sleep(1.0)
