"""The run manager: admits queued runs on this replica, within a concurrency bound.

The queue lives in the database (runs in status QUEUED), so any replica can take a run and a lost
wake-up only delays. A run executes on the replica that holds its session's lease (docs/architecture.md,
decision 4; api/runtime/leases.py); a replica that dies lets its leases lapse, and its running runs are
marked FAILED by whichever replica's reaper notices first.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from api.control import commands
from api.control.channel import ControlChannel
from api.control.commands import Command, RewindFiles
from api.events.bus import EventBus
from api.events.log import EventLog
from api.runtime import capacity, lifecycle, metrics
from api.runtime.early_start import EarlyStarts
from api.runtime.leases import LeaseKeeper, OrphanReaper
from api.runtime.mcp_registry import McpRegistry
from api.runtime.policy import RunOptions
from api.runtime.session_actor import SessionActor
from api.runtime.warm_pool import WarmCli, WarmPool
from api.sandbox.launcher import AgentLauncher
from api.settings import Settings
from api.webhooks.dispatcher import WebhookDispatcher
from persistence.database import Database
from persistence.models import Run
from persistence.repositories.runs import RunRepository

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class StartReservation:
    """A run slot on this replica held for a run startRun begins as it queues it, on a CLI that is
    live here already: the session's idle one (`actor`), or a pooled one (`actor` None)."""

    session_id: str
    actor: SessionActor | None
    # When the lease claim that keeps (or takes) the session's lease was sent (LeaseKeeper.note_claimed);
    # startRun sets it again as it sends the claim.
    claim_sent: float
    done: bool = False


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
        self.control = ControlChannel(bus, db, legacy=settings.control_legacy_channel)
        self.replica = settings.replica_id
        self.launcher = launcher
        self.webhooks = WebhookDispatcher(settings, db)
        # Validated at start: a broken registry stops the server with the file's name.
        self.mcp_registry = McpRegistry.load(settings.mcp_servers_file)
        self._actors: dict[str, SessionActor] = {}
        self._running = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[Any]] = set()
        # Sessions with a run beginning here, and the releases of their old actors' leases held back
        # meanwhile (release_lease).
        self._beginning: dict[str, int] = {}
        self._deferred_release: dict[str, int] = {}
        # Runs waiting QUEUED in the deployment when the dispatcher last counted (reserve_start).
        self._queued_seen = 0
        # Whether anything but a run's end woke the dispatcher since its last round (_dispatch_loop).
        self._work_changed = True
        self.warm_pool = WarmPool(self)
        self.early = EarlyStarts(self)
        self.leases = LeaseKeeper(settings, db, on_lost=self._lease_lost)
        self.reaper = OrphanReaper(
            settings, event_log, is_local=lambda session_id: session_id in self._actors, on_reaped=self.nudge
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.tenants_dir.mkdir(parents=True, exist_ok=True)
        capacity.publish(self)
        control_ready = asyncio.Event()
        self._lease_task = asyncio.create_task(self.leases.run(), name="run-leases")
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="run-dispatch"),
            asyncio.create_task(self.reaper.run(), name="run-reaper"),
            asyncio.create_task(self.control.listen(self._on_control, control_ready), name="run-control"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(control_ready.wait(), timeout=10)
        await self.warm_pool.start()
        self.nudge()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.warm_pool.stop()
        actors = list(self._actors.values())
        for actor in actors:
            actor.task.cancel()
        await asyncio.gather(*(actor.task for actor in actors), return_exceptions=True)
        # Renewed to the last: the actors write their runs' outcomes under their leases as they stop.
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        await self.webhooks.close()

    # -- what the control plane calls ----------------------------------------------------------------

    def nudge(self) -> None:
        self._work_changed = True
        self._wake.set()

    async def announce_work(self) -> None:
        """A run was queued: wake this replica's dispatcher and, through the bus, every other one."""
        self.nudge()
        # Through the outbox: a silent Redis must not hold up startRun (the others also poll).
        await self.control.publish_soon({"type": "dispatch"})

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
        token = await self.leases.claim(session_id)
        if token is None:
            return False
        self._actor_for(session_id, token)
        return True

    def _actor_for(self, session_id: str, token: int) -> SessionActor:
        """The session's actor under the lease token just claimed: a new one when there is none, or
        when the one there holds an older generation (the lease was lost meanwhile: its CLI is stale)."""
        actor = self._actors.get(session_id)
        if actor is not None and not actor.closing and actor.lease_token != token:
            actor.retire()
            actor = None
        if actor is None or actor.closing:
            actor = SessionActor(self, session_id, token)
            self._actors[session_id] = actor
        return actor

    @property
    def can_execute(self) -> bool:
        """Whether this replica may start agents (EXECUTE_RUNS and a working sandbox, or SANDBOX=off)."""
        return self.settings.execute_runs and self.launcher.ready

    async def _adopt_and_deliver(self, command: RewindFiles) -> None:
        """A rewind for a session nobody runs, sent to every replica: the one that takes its lease acts."""
        if await self.adopt(command.session_id):
            await self.deliver_local(command)

    def reserve_start(self, session_id: str, *, pooled: bool = False) -> StartReservation | None:
        """A run slot for a run of this session that can begin here at once, on the session's CLI that
        is live and idle here (or, `pooled`, on the pooled CLI startRun just took for it); None when
        the run must queue for the dispatcher instead. begun_here() or cancel_start() follows.

        Nothing awaits between the checks and the hold: the dispatcher, an eviction and the actor's
        idle timeout, on the same loop, see the slot taken and the actor busy.

        An actor still writing its last run's outcome counts as idle, and that run's slot as the next
        one's: other connections read the outcome as committed before the actor's commit returns to it
        (0.2-8 ms on SQLite here, longer on a loaded machine), and a client that sees the run over may
        send the next turn at once. startRun's transaction queues the run after all if it finds the
        last one not over yet; nothing was sent to the CLI (send_ahead waits for an actor with no run)."""
        if not self.can_execute:
            return None
        if self._queued_seen:
            # Runs are waiting for a slot or for room: they go first, in the dispatcher's order.
            return None
        running = self._running
        actor: SessionActor | None = None
        if not pooled:
            actor = self._actors.get(session_id)
            if actor is None or not actor.has_live_cli:
                return None
            if actor.only_recording:
                running -= 1
            elif actor.busy:
                return None
            if self.leases.token(session_id) != actor.lease_token:
                return None
        if running >= self.settings.max_concurrent_runs:
            return None
        if actor is not None:
            actor.reserve()
        self._running += 1
        # As in _begin: a late release of the session's lease waits until the run is handed over.
        self._start_beginning(session_id)
        return StartReservation(session_id, actor, self.leases.now())

    async def start_early(
        self, tenant_id: str, options: RunOptions
    ) -> tuple[WarmCli, StartReservation] | None:
        """For a new session's first run, when it can begin here at once: a session id, a run slot held
        for it (reserve_start) and its CLI starting, so the CLI starts while startRun writes the session
        (api/runtime/early_start.py). None: the run takes the usual way (queued, then the dispatcher).

        No await between the checks and the holds: the slot and the room the CLI takes are counted
        before anything else on the loop can look."""
        if not self.early.allowed(tenant_id):
            return None
        session_id = str(uuid.uuid4())
        reservation = self.reserve_start(session_id, pooled=True)
        if reservation is None:
            return None
        if not self._room_for_an_agent():
            await self.cancel_start(reservation)
            return None
        cli: WarmCli | None = None
        try:
            cli = await self.early.start(tenant_id, session_id, options)
        finally:
            if cli is None:
                await asyncio.shield(self.cancel_start(reservation))
        return None if cli is None else (cli, reservation)

    def begun_here(
        self,
        reservation: StartReservation,
        run: Run,
        token: int,
        hook_events: tuple[str, ...],
        log_end: int,
    ) -> None:
        """startRun committed `run` RUNNING here under lease `token`, having read the tenant's
        `hook_events` in the same transaction and left the session's log ending at `log_end`: hand it
        to the session's actor."""
        session_id = run.session_id
        self.leases.note_claimed(session_id, token, reservation.claim_sent)
        held = reservation.actor
        if (
            held is not None
            and not held.closing
            and held.lease_token == token
            and self._actors.get(session_id) is held
        ):
            # A prompt sent ahead (SessionActor.send_ahead) goes on: its model calls and its log.
            held.confirm_ahead(run.id, hook_events)
            held.submit(run, reserved=True, hook_events=hook_events)
        else:
            if held is not None:
                held.unreserve()
            # A pooled CLI's new actor (install_warm), or the session's CLI went meanwhile (its lease
            # was lost, or it died) and the session connects anew.
            self._actor_for(session_id, token).submit(run, hook_events=hook_events, log_end=log_end)
        reservation.done = True
        # The session has an actor here now, which holds the lease: nothing held back is released.
        self._end_beginning(session_id)

    async def cancel_start(self, reservation: StartReservation) -> None:
        """The run was not begun here after all (refused or rolled back): give the slot back."""
        if reservation.done:
            return
        reservation.done = True
        if reservation.actor is not None:
            # A prompt sent ahead of the run is undone first, while the actor is still held for it.
            await asyncio.shield(reservation.actor.undo_ahead())
            reservation.actor.unreserve()
        self._running = max(0, self._running - 1)
        deferred = self._end_beginning(reservation.session_id)
        if deferred is not None:
            await self.release_lease(reservation.session_id, deferred)
        self.nudge()

    def _start_beginning(self, session_id: str) -> None:
        self._beginning[session_id] = self._beginning.get(session_id, 0) + 1

    def _end_beginning(self, session_id: str) -> int | None:
        """One run of the session less beginning here; once none is, the lease release held back
        meanwhile (release_lease), if any."""
        self._beginning[session_id] -= 1
        if self._beginning[session_id]:
            return None
        del self._beginning[session_id]
        return self._deferred_release.pop(session_id, None)

    # -- what actors call ----------------------------------------------------------------------------

    def forget_actor(self, actor: SessionActor) -> None:
        if self._actors.get(actor.session_id) is actor:
            del self._actors[actor.session_id]

    def run_finished(self, session_id: str) -> None:
        self._running = max(0, self._running - 1)
        self.warm_pool.turn_ended(session_id)
        # A freed slot matters only to runs waiting for one: _dispatch_loop skips the round when none
        # were queued at its last count and nothing was announced since.
        self._wake.set()

    async def release_lease(self, session_id: str, token: int) -> None:
        """An actor is gone (its CLI stopped): free the lease it held, unless a newer actor uses it, or
        a run of the session is beginning here (its begin may have kept this very token: the live lease
        was ours); _begin frees it afterwards if that run did not start."""
        if session_id in self._actors:
            return
        if session_id in self._beginning:
            self._deferred_release[session_id] = token
            return
        await self.leases.release(session_id, token)
        self.nudge()

    def _lease_lost(self, session_id: str, reason: str) -> None:
        actor = self._actors.get(session_id)
        if actor is not None:
            actor.lose_lease(reason)

    @property
    def running(self) -> int:
        return self._running

    # -- loops ---------------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            polled = False
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.dispatch_poll_seconds)
            except TimeoutError:
                polled = True
            self._wake.clear()
            if not (polled or self._work_changed or self._queued_seen):
                # Only runs ended since the last round, which saw no queue: a run queued since was
                # announced (nudge) or is found by the poll, so this round's three reads (interrupts,
                # claimable runs, the queue's depth) would find what the last found. Every follow-up
                # turn's end would pay for them.
                continue
            self._work_changed = False
            try:
                await self._poll_interrupts()
                await self._admit()
                self._queued_seen = await capacity.count_queue(self.db)
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
            candidates = await RunRepository(session).claimable(self.replica, limit=free)
        for run in candidates:
            if self._running >= self.settings.max_concurrent_runs:
                return
            actor = self._actors.get(run.session_id)
            if actor is not None and (actor.busy or actor.closing):
                continue
            if (actor is None or not actor.has_agent) and not self._room_for_an_agent():
                # Every CLI the budget allows is in use: the run waits QUEUED (here or elsewhere).
                return
            await self._begin(run)

    async def _begin(self, run: Run) -> bool:
        """QUEUED → RUNNING here and into the session's actor; False when another got there first."""
        sent = self.leases.now()
        session_id = run.session_id
        # The slot is taken before the first await, so a concurrent admission counts it.
        self._running += 1
        self._start_beginning(session_id)
        transition: lifecycle.Transition | None = None
        try:
            transition = await lifecycle.begin(
                self.event_log, run, replica=self.replica, lease_seconds=self.settings.lease_seconds
            )
            if transition is None:
                return False
            assert transition.lease_token is not None
            self.leases.note_claimed(session_id, transition.lease_token, sent)
            # The actor first: it may start its CLI while the transition is published.
            self._actor_for(session_id, transition.lease_token).submit(transition.run)
        finally:
            if transition is None:
                self._running -= 1
            deferred = self._end_beginning(session_id)
            if deferred is not None:
                # release_lease keeps it when the session has an actor here (the run began).
                await self.release_lease(session_id, deferred)
        await lifecycle.announce(self.event_log, transition)
        return True

    def live_agents(self) -> int:
        """CLIs alive or starting on this replica, the warm pool's included: what the budget counts."""
        local = sum(1 for actor in self._actors.values() if actor.has_agent)
        return local + self.warm_pool.live + self.early.live()

    def agents_by_state(self) -> tuple[int, int]:
        """Sessions' CLIs (running, idle) on this replica; the warm pool's are `warm_pool.live`."""
        live = [actor for actor in self._actors.values() if actor.has_agent]
        running = sum(1 for actor in live if actor.busy)
        return running, len(live) - running

    def room_for_warm(self) -> bool:
        """Whether the warm pool may start one more CLI: only into room nobody else uses."""
        return self.can_execute and self.live_agents() < self.settings.effective_max_live_agents

    def install_warm(self, cli: WarmCli, token: int, *, begun: bool = False) -> None:
        """startRun made a session of a pooled CLI (its lease is ours): give the session an actor that
        holds the CLI, so its run (begun with it, or by the dispatcher here) uses it. `begun`: the run
        is begun here next (begun_here), so the dispatcher has nothing to do for it."""
        actor = self._actors.get(cli.session_id)
        if actor is not None:
            # The dispatcher was faster and started the session cold: the pooled CLI is surplus.
            self.warm_pool.discard(cli, remove_files=False)
            return
        actor = SessionActor(self, cli.session_id, token)
        actor.adopt_warm(cli)
        self._actors[cli.session_id] = actor
        if not begun:
            # Its run waits QUEUED for the dispatcher. Not for a run begun here: a new session's first
            # run, early-started, would pay for a dispatcher round of reads (interrupts, claimable runs,
            # the queue's depth) that find nothing, while its CLI starts on the same cores.
            self.nudge()

    def _room_for_an_agent(self) -> bool:
        """Whether one more CLI fits in the budget, stopping a pooled CLI or else the least recently
        used idle one if that is what it takes. Idle CLIs are a cache: memory, not state (the transcript
        is on disk); pooled ones are a guess at the next new session."""
        if self.live_agents() < self.settings.effective_max_live_agents:
            return True
        if self.warm_pool.evict_one():
            return True
        idle = [actor for actor in self._actors.values() if actor.has_agent and not actor.busy]
        for actor in sorted(idle, key=lambda actor: actor.last_active):
            if actor.evict():
                metrics.AGENTS_EVICTED.inc()
                log.info("agent.evicted", session_id=actor.session_id, live=self.live_agents())
                return True
        return False

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

    def _on_control(self, message: dict[str, Any] | None) -> None:
        if message is None or message.get("type") != commands.MESSAGE_TYPE:
            self.nudge()  # a dispatch wake-up, or messages may have been missed
            return
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
