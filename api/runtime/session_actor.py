"""One task per live session: owns its CLI connection and executes its runs one at a time."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from claude_agent_sdk import ClaudeSDKError
from sqlalchemy.exc import SQLAlchemyError

from api.control.commands import (
    CloseSession,
    Command,
    DecidePermission,
    Interrupt,
    RewindFiles,
    SetModel,
    SetPermissionMode,
)
from api.errors import PolicyViolation
from api.events.records import EventKind
from api.runtime import lifecycle, metrics
from api.runtime.permissions import PermissionBroker
from api.runtime.policy import RunOptions
from api.runtime.pump import DATABASE_UNAVAILABLE, ConnectionLost, ConnectionPump, PumpSignal, ResultSeen
from api.runtime.sdk_adapter import (
    AgentConnection,
    AgentFailure,
    AgentOutput,
    AgentSpec,
    HookProvider,
    remove_transcript,
    restored_cost_usd,
    transcript_exists,
    transcript_message,
    transcript_path,
)
from api.runtime.transcript_store import restore_transcript, session_store_for
from api.webhooks.dispatcher import HookCall, unavailable_output
from persistence.models import Run
from persistence.repositories.leases import StaleLease
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository

if TYPE_CHECKING:
    from api.runtime.run_manager import RunManager
    from api.runtime.warm_pool import WarmCli
    from api.sandbox.launcher import Launch
    from api.sandbox.layout import SessionPaths
    from persistence.session_store import DatabaseSessionStore

log = structlog.get_logger(__name__)

# After an interrupt the CLI answers with a result within milliseconds; past this it is presumed stuck.
INTERRUPT_GRACE_SECONDS = 15.0
# The SDK's own hook timeout, beyond the webhook call's: our deadline answers first, so a timeout is ours
# to decide (fail closed or open), never the CLI's.
HOOK_TIMEOUT_MARGIN_SECONDS = 10.0

# What a run reads when its CLI had to be stopped because it ignored the interrupt.
FORCED_STOP_ERROR = (
    f"the agent did not stop within {INTERRUPT_GRACE_SECONDS:g} s of the interrupt; its CLI was stopped"
)
# At shutdown or lease loss: how long stopping the CLI and committing its last messages may take before
# the run's outcome is written regardless.
STOP_BEFORE_RECORD_SECONDS = 6.0
# Writing a run's outcome is retried for about 45 s of database trouble before the session is given up.
RECORD_ATTEMPTS = 9


@dataclass(frozen=True)
class Outcome:
    status: str
    error: str | None = None
    result: dict[str, Any] | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] | None = None


@dataclass
class _SentAhead:
    """A run's prompt that went to the live CLI while startRun's transaction commits (send_ahead)."""

    run_id: str
    # The session's transcript and its length before the prompt went out: what an undo restores.
    transcript: Path
    length: int
    confirmed: bool = False


def _refused_by_cli(exc: BaseException) -> bool:
    """The SDK raises a plain `Exception` with the CLI's message for a control request the CLI answered
    with an error; a lost CLI or a timeout is no fault of this server either."""
    return type(exc) is Exception or isinstance(exc, ClaudeSDKError | TimeoutError | ConnectionError)


def _log_failed(command: Command, exc: BaseException) -> None:
    if _refused_by_cli(exc):
        # The CLI answered the control request with an error (an unknown model, say): the caller's
        # request, not a fault of this server, so no traceback.
        log.warning("control.command_refused", command=repr(command), error=str(exc) or repr(exc))
    else:
        log.warning("control.command_failed", command=repr(command), exc_info=exc)


class _Interrupted:
    """The marker _next_signal returns when an interrupt was asked for."""


_INTERRUPTED = _Interrupted()


class SessionActor:
    """Runs one session's CLI under one generation of its lease (`lease_token`): every write it makes
    carries that token, and the first refused one, or a lease the keeper lost, stops it at once."""

    def __init__(self, manager: RunManager, session_id: str, lease_token: int) -> None:
        self.manager = manager
        self.session_id = session_id
        self.lease_token = lease_token
        self.fence = manager.leases.fence(lease_token)
        self.current_run: Run | None = None
        self.closing = False
        # None asks _main to leave (evict()).
        self._queue: asyncio.Queue[Run | RewindFiles | CloseSession | None] = asyncio.Queue()
        self.last_active = asyncio.get_running_loop().time()
        self._working = False
        # Runs submitted and not yet taken, and whether the current run's outcome is already written.
        self._waiting_runs = 0
        # Runs startRun is beginning on this actor's CLI, not yet submitted (RunManager.reserve_start).
        self._reserved = 0
        # Submitted runs' hook events, read as they began (submit()).
        self._hook_events: dict[str, tuple[str, ...]] = {}
        # The log's last seq as the transaction that began a run here left it (submit's `log_end`).
        self._log_end: dict[str, int] = {}
        self._run_recorded = False
        # From the current run's outcome being written until the run ends here (nothing of it uses the CLI).
        self._recording = False
        self._pump: ConnectionPump | None = None
        self._signals: asyncio.Queue[PumpSignal] = asyncio.Queue()
        self._interrupt = asyncio.Event()
        self._cost_so_far = 0.0
        # The connection's options as the runs asked them, and the running total its CLI may reach
        # (see _ensure_connection): the CLI's max_budget_usd bounds that total, not one turn.
        self._connection_key: tuple[Any, ...] | None = None
        self._budget_limit: float | None = None
        self._abandon_reason: str | None = None
        # The lease moved on (another holder, a reaper, or it could not be renewed): write nothing more.
        self._lease_lost = False
        self._give_up = False
        self._launch: Launch | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._closing_pump: ConnectionPump | None = None
        self._paths: SessionPaths | None = None
        self._tenant_id: str | None = None
        # The session's transcripts in the database (SESSION_STORE=database), else None.
        self._store: DatabaseSessionStore | None = None
        # A CLI from the warm pool, connected for this session before it existed, or one startRun started
        # for it (still connecting, perhaps), until a run uses it.
        self._warm: WarmCli | None = None
        # A prompt sent ahead of its run's commit (send_ahead), until the run executes or it is undone.
        self._ahead: _SentAhead | None = None
        self.permissions = PermissionBroker(
            manager.event_log,
            session_id,
            timeout_seconds=manager.settings.permission_timeout_seconds,
            poll_seconds=manager.settings.dispatch_poll_seconds,
            current_run=self._run_and_tenant,
            before_request=self._flush_log,
            fence=self.fence,
            on_lease_lost=self._write_refused,
        )
        # A fresh context: the actor outlives whatever request started it and must not log under its id.
        self.task = asyncio.create_task(
            self._main(), name=f"session-{session_id}", context=contextvars.Context()
        )

    @property
    def busy(self) -> bool:
        return self.current_run is not None or self._busy_beside_the_current_run

    @property
    def only_recording(self) -> bool:
        """Busy with nothing but writing the current run's outcome, which may be committed already: a
        client that read the run as over may send the session's next turn at once, which can then
        begin on this CLI once that write is done (RunManager.reserve_start). Nothing of the run uses
        the CLI any more."""
        return self._recording and not self._busy_beside_the_current_run

    @property
    def _busy_beside_the_current_run(self) -> bool:
        return self._working or self._reserved > 0 or self._ahead is not None or not self._queue.empty()

    @property
    def has_live_cli(self) -> bool:
        """A connected CLI of this session's that a run could be sent to at once."""
        pump = self._pump
        return not self.closing and pump is not None and pump.connection.alive

    def reserve(self) -> None:
        """Hold this actor for a run being begun here (it neither leaves idle nor is evicted
        meanwhile): submit(run, reserved=True) or unreserve() follows."""
        self._reserved += 1

    def unreserve(self) -> None:
        self._reserved = max(0, self._reserved - 1)

    async def send_ahead(
        self, run_id: str, prompt_uuid: str, prompt: str, tenant_id: str, options: RunOptions
    ) -> bool:
        """Send a follow-up's prompt to this session's live, idle CLI before startRun's transaction,
        which this actor is reserved for (reserve()), commits its run (docs/architecture.md, decision 15).
        Nothing of the turn leaves before the commit: the CLI's model calls wait at the gateway (the
        pass is held, not open) and the pump logs nothing. confirm_ahead() lets both go once the run is
        committed; undo_ahead() (the begin failed, or did not begin this run here) stops the CLI and cuts
        the transcript back to its length before the prompt, so the session is as it was.

        Only where that holds: a CLI of this tenant's session, behind the gateway, with no hooks (a hook
        would call the tenant's webhooks before the model, that is, before the commit) and with no
        session store (which mirrors the transcript elsewhere as it is written), whose connection fits
        the run's options as they are. False: nothing was sent."""
        pump, launch, paths = self._pump, self._launch, self._paths
        if (
            self._ahead is not None
            or self._reserved != 1
            or self.closing
            or self.current_run is not None
            or self._store is not None
            or pump is None
            or not pump.connection.alive
            or launch is None
            or launch.grant is None
            or paths is None
            or self._tenant_id != tenant_id
        ):
            return False
        spec = self._agent_spec(str(paths.workspace), options, (), resume=True)
        if spec.hook_events or self._needs_new_connection(spec):
            return False
        transcript = transcript_path(str(paths.agent_dir), spec.cwd, self.session_id)
        try:
            length = transcript.stat().st_size
        except OSError:
            # Nothing to restore it to: the run goes the usual way.
            return False
        self._ahead = _SentAhead(run_id, transcript, length)
        launch.grant.hold()
        pump.hold()
        # What is left of earlier turns; from here on nothing is signalled before the commit.
        self._drain_signals()
        pump.current_run_id = run_id
        try:
            await pump.connection.send(prompt, prompt_uuid)
        except AgentFailure:
            # Perhaps written in part: undone, and the run goes the usual way (a new CLI).
            await asyncio.shield(self.undo_ahead())
            return False
        except BaseException:
            await asyncio.shield(self.undo_ahead())
            raise
        return True

    def confirm_ahead(self, run_id: str, hook_events: tuple[str, ...]) -> None:
        """The run whose prompt went ahead is committed RUNNING here: its model calls and its log go on,
        unless the tenant has hooks now (read in that transaction), which the CLI was started without:
        then the run's execution undoes the turn and sends the prompt again on a CLI that has them."""
        ahead = self._ahead
        if ahead is None or ahead.run_id != run_id or hook_events or self._pump is None:
            return
        ahead.confirmed = True
        if self._launch is not None and self._launch.grant is not None:
            self._launch.grant.settle(open=True)
        self._pump.release()

    async def undo_ahead(self) -> None:
        """Stop the CLI a prompt went to ahead of a begin that failed, and restore the transcript as it
        was before the prompt; a no-op when no prompt went ahead (or it was confirmed)."""
        ahead = self._ahead
        if ahead is None or ahead.confirmed:
            return
        pump = self._pump
        if pump is not None:
            # Nothing it said is logged (the pump is held) and nothing more will be.
            pump.terminate()
        # Until the process is gone: only then can nothing write the transcript any more.
        await self._disconnect(interrupt_first=False)
        if self._ahead is not ahead:
            return  # undone meanwhile by another caller (startRun's failure and the actor's end)
        self._ahead = None
        if self._lease_lost:
            # Another replica may hold the session by now and write the transcript itself: leave it. (The
            # keeper kills this replica's CLIs before the lease could lapse, so while _lease_lost is
            # unset, nobody else holds it, and nothing awaits between this check and the truncate.)
            log.warning("run.ahead_not_restored", session_id=self.session_id)
            return
        try:
            os.truncate(ahead.transcript, ahead.length)
        except OSError:
            log.exception("run.ahead_restore_failed", session_id=self.session_id)
        else:
            log.info("run.ahead_undone", session_id=self.session_id)

    @property
    def has_agent(self) -> bool:
        """A CLI process is alive, or about to be, for this session (it counts against the budget)."""
        return not self.closing and (self._pump is not None or self._warm is not None or self.busy)

    def evict(self) -> bool:
        """Stop this session's idle CLI to make room for another's; False when it is in use.

        Nothing is lost: the transcript is on disk and the session's next run resumes it."""
        if self.closing or self.busy or (self._pump is None and self._warm is None):
            return False
        # No await before leaving the registry: the dispatcher, on the same loop, sees it gone.
        self.closing = True
        self.manager.forget_actor(self)
        self._queue.put_nowait(None)
        return True

    def adopt_warm(self, cli: WarmCli) -> None:
        """Take a pooled CLI started for this session (it exists now): its first run uses it when the
        run's options fit, else it is stopped and a CLI started as usual."""
        self._warm = cli
        self._launch = cli.launch
        self._paths = cli.launch.paths
        self._tenant_id = cli.tenant_id
        cli.binding.actor = self

    def submit(
        self,
        run: Run,
        *,
        reserved: bool = False,
        hook_events: tuple[str, ...] | None = None,
        log_end: int | None = None,
    ) -> None:
        """Queue a run begun for this session. `hook_events`: the tenant's, as read when the run began
        (so the run need not read them again); `log_end`: the session's last seq as that begin left it."""
        if reserved:
            self.unreserve()
        if hook_events is not None:
            self._hook_events[run.id] = hook_events
        if log_end is not None:
            self._log_end[run.id] = log_end
        self._waiting_runs += 1
        self._queue.put_nowait(run)

    async def _blocking(self) -> bool:
        """A run executes or waits here, or a rewind is under way: a rewind or a close must not slip
        in. A run whose outcome is committed reads as over to every client already, so a command
        arriving while the actor lets go of it waits that moment in the queue instead."""
        if self.closing or self._working or self._waiting_runs > 0 or self._reserved > 0:
            return True
        run = self.current_run
        if run is None or self._run_recorded:
            return False
        async with self.manager.db.session() as session:
            fresh = await RunRepository(session).get(run.id)
        return fresh is None or fresh.status not in lifecycle.TERMINAL

    def abandon(self, reason: str) -> None:
        """Stop at once: the current run ends FAILED with `reason` and the CLI is closed."""
        self._abandon_reason = reason
        self.task.cancel()

    def lose_lease(self, reason: str) -> None:
        """The lease is gone or about to lapse: kill the CLI at once and write nothing, since another
        replica may hold the session already; whoever holds it next (or a reaper) settles the run."""
        if self._lease_lost:
            return
        log.error("lease.actor_stopping", session_id=self.session_id, reason=reason)
        self._lease_lost = True
        for pump in (self._pump, self._closing_pump):
            if pump is not None:
                # Now, not after the task unwinds (nor after a graceful stop already under way): the
                # lease may lapse within a second or two.
                pump.terminate()
        # Still registered until its task ends, so this replica starts no other CLI for the session
        # meanwhile (and its own reaper leaves the run to the others, or to the moment it is gone).
        self.closing = True
        self.abandon(reason)

    def _write_refused(self) -> None:
        self.lose_lease(f"replica {self.manager.replica} lost the session's lease during the run")

    def retire(self) -> None:
        """An idle actor whose lease generation is over (this replica claimed the session anew): leave,
        stopping its CLI; the session's next actor connects afresh."""
        self.closing = True
        self.manager.forget_actor(self)
        self._queue.put_nowait(None)

    async def handle(self, command: Command) -> bool:
        """The one entry point for control commands; False when this actor cannot act on it."""
        if isinstance(command, Interrupt):
            return self.interrupt(command.run_id)
        if isinstance(command, DecidePermission):
            return self.permissions.poke(command.request_id)
        if isinstance(command, RewindFiles | CloseSession):
            # Queued like runs, so a rewind never overlaps a run on the same CLI.
            if await self._blocking():
                await self._reply(command.reply_to, {"busy": True})
            else:
                self._queue.put_nowait(command)
            return True
        if isinstance(command, SetModel | SetPermissionMode):
            answer = await self._apply_live(command)
            if command.reply_to:
                await self._reply(command.reply_to, answer)
            return True
        pump = self._pump
        if pump is None:
            return False
        try:
            usage = await pump.connection.context_usage()
        except Exception as exc:
            _log_failed(command, exc)
            return False
        await self.manager.bus.publish(command.reply_to, orjson.dumps(usage).decode())
        return True

    async def _apply_live(self, command: SetModel | SetPermissionMode) -> dict[str, Any]:
        """What the live CLI said to a model or permission-mode change, for the caller waiting on it."""
        pump = self._pump
        if pump is None:
            return {"applied": False, "live": False}
        try:
            if isinstance(command, SetModel):
                await pump.connection.set_model(command.model)
            else:
                await pump.connection.set_permission_mode(command.mode)
        except Exception as exc:
            _log_failed(command, exc)
            told = _refused_by_cli(exc) and str(exc)
            if told and isinstance(command, SetModel) and self.current_run is None:
                # The CLI checks a model name it does not know with the model API, which a session
                # reaches only while one of its runs executes (the gateway pass): say why it failed.
                told += (
                    " (between runs the agent cannot check a model name it does not know: name a "
                    "known model or alias such as sonnet, opus or haiku, or pass model to the next startRun)"
                )
            return {"applied": False, "error": told or "the agent could not apply the change"}
        log.info("control.command_applied", command=repr(command))
        return {"applied": True}

    def interrupt(self, run_id: str) -> bool:
        if self.current_run is not None and self.current_run.id == run_id:
            self._interrupt.set()
            return True
        return False

    def _run_and_tenant(self) -> tuple[str | None, str | None]:
        run = self.current_run
        return (run.id, run.tenant_id) if run is not None else (None, None)

    async def _flush_log(self) -> None:
        if self._pump is not None:
            await self._pump.flush()

    async def _reply(self, channel: str, answer: dict[str, Any]) -> None:
        await self.manager.bus.publish(channel, orjson.dumps(answer).decode())

    async def _main(self) -> None:
        settings = self.manager.settings
        closed_for: str | None = None
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout=settings.idle_client_seconds)
                    if item is None:
                        # evict(): the replica needs this idle CLI's memory for another session.
                        return
                except TimeoutError:
                    if self._queue.empty() and not self._reserved:
                        # No await between the check and leaving the registry: the dispatcher, on the
                        # same loop, either sees this actor gone or submits before the check.
                        self.closing = True
                        self.manager.forget_actor(self)
                        return
                    continue
                if isinstance(item, CloseSession):
                    self.closing = True
                    self.manager.forget_actor(self)
                    closed_for = item.reply_to
                    return
                if isinstance(item, RewindFiles):
                    await self._rewind(item)
                    continue
                self._waiting_runs -= 1
                await self._run(item)
                if self._give_up:
                    return
        finally:
            self.closing = True
            self.manager.forget_actor(self)
            # A prompt sent ahead of a begin that never came (the actor was cancelled meanwhile) is undone.
            await self.undo_ahead()
            await self._disconnect(interrupt_first=not self._lease_lost)
            await self.manager.release_lease(self.session_id, self.lease_token)
            if closed_for is not None:
                # Only now: the CLI is gone and the lease free, so the caller may remove the session.
                await self._reply(closed_for, {"closed": True})

    async def _run(self, run: Run) -> None:
        self.current_run = run
        self._run_recorded = False
        self._interrupt.clear()
        structlog.contextvars.bind_contextvars(run_id=run.id, session_id=run.session_id)
        outcome = Outcome("FAILED", error="the run did not finish")
        stop_first = False
        started = asyncio.get_running_loop().time()
        metrics.RUNS_STARTED.inc()
        metrics.RUNS_RUNNING.inc()
        try:
            log.info("run.started")
            outcome = await self._execute(run)
        except asyncio.CancelledError:
            outcome = Outcome("FAILED", error=self._abandon_reason or "the server shut down during the run")
            stop_first = True
            raise
        except (SQLAlchemyError, OSError):
            log.warning("run.database_unavailable", exc_info=True)
            await self._disconnect()
            outcome = Outcome("FAILED", error=DATABASE_UNAVAILABLE)
        except Exception as exc:
            # A run's failure must never kill the actor (or the session's later runs).
            log.exception("run.crashed")
            outcome = Outcome("FAILED", error=f"internal error: {type(exc).__name__}")
        finally:
            try:
                if self._lease_lost:
                    await self._end_without_record()
                else:
                    await self._settle(run, outcome, stop_first=stop_first)
            finally:
                # Even when a lost lease cancels the settling: the run no longer counts here.
                metrics.RUNS_RUNNING.dec()
                metrics.RUNS_FINISHED.labels(status=outcome.status).inc()
                metrics.RUN_SECONDS.observe(asyncio.get_running_loop().time() - started)
                structlog.contextvars.unbind_contextvars("run_id", "session_id")
                self.current_run = None
                self._recording = False
                self.last_active = asyncio.get_running_loop().time()
                self.manager.run_finished(self.session_id)

    async def _end_without_record(self) -> None:
        """The lease moved on mid-run: kill the CLI (no interrupt: nothing it says can be written) and
        leave; the run's outcome is the new holder's or a reaper's to write."""
        await self._disconnect_within(STOP_BEFORE_RECORD_SECONDS, interrupt_first=False)
        self._give_up = True
        log.warning("run.left_to_new_holder", reason=self._abandon_reason)

    async def _settle(self, run: Run, outcome: Outcome, *, stop_first: bool) -> None:
        """Stop what must stop, cancel what the run left pending, and write its outcome."""
        if stop_first or self._abandon_reason is not None:
            # Stop the CLI and commit what it said before the run reads as over: the final status is
            # the run's last event, and another replica may hold the lease next. Bounded, so a
            # shutdown ends on time (the pump's tasks are cancelled past it; nothing more is written).
            await self._disconnect_within(STOP_BEFORE_RECORD_SECONDS)
        # Nothing the run asked stays pending once it is over (its waiting calls deny).
        await asyncio.shield(
            self.permissions.cancel_run(run.id, f"the run ended: {outcome.error or outcome.status}")
        )
        if self._pump is not None:
            self._pump.current_run_id = None
        self._hold_model_pass(False)
        self._recording = True
        if await asyncio.shield(self._record(run, outcome)):
            self._run_recorded = True
        else:
            # The outcome could not be written: give the session up, so the lease lapses and
            # whichever replica reaps the run settles it, rather than leave it RUNNING forever.
            self._give_up = True
        log.info("run.finished", status=outcome.status, error=outcome.error)

    async def _record(self, run: Run, outcome: Outcome) -> bool:
        """Write the run's outcome, retrying through a short database outage."""
        delay = 0.5
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            if self._lease_lost:
                # The lease lapsed unrenewed meanwhile: the run is the next holder's or a reaper's.
                return False
            try:
                transition = await lifecycle.finish(
                    self.manager.event_log,
                    run.id,
                    status=outcome.status,
                    error=outcome.error,
                    result=outcome.result,
                    cost_usd=outcome.cost_usd,
                    usage=outcome.usage,
                    fence=self.fence,
                )
                await lifecycle.announce(self.manager.event_log, transition)
                return True
            except StaleLease:
                # Another replica holds the session now: the run is its (or a reaper's) to settle.
                log.error("run.record_refused", run_id=run.id)
                self._lease_lost = True
                return False
            except Exception:
                log.warning("run.record_failed", attempt=attempt, exc_info=True)
                if attempt < RECORD_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
        return False

    async def _spec(
        self,
        tenant_id: str,
        run_options: dict[str, Any],
        *,
        live_ok: bool = False,
        known_hook_events: tuple[str, ...] | None = None,
    ) -> AgentSpec:
        """The connection a run of these options needs. `live_ok`: when the live CLI fits it, a spec
        that only says so (where a new connection would start from is not looked up: nothing starts).
        `known_hook_events`: the tenant's hook events, already read."""
        options = RunOptions.from_json(run_options)
        hook_events: asyncio.Future[tuple[str, ...]]
        if known_hook_events is not None:
            hook_events = asyncio.get_running_loop().create_future()
            hook_events.set_result(known_hook_events)
        else:
            # Looked up beside the session's row and files rather than after them: it is on the way to
            # the CLI (or to its first prompt) for every run.
            hook_events = asyncio.ensure_future(self.manager.webhooks.events_for(tenant_id))
        try:
            paths, warm = self._paths, self._warm
            if live_ok and paths is not None and self._tenant_id == tenant_id:
                # A run on the live CLI (a follow-up, or a pooled CLI's first run, whose session is
                # new): the prompt goes out without reading the session's row or files, unless the run
                # asks for another connection after all.
                if self._pump is not None:
                    live = self._agent_spec(str(paths.workspace), options, await hook_events, resume=True)
                    if not self._needs_new_connection(live):
                        return live
                elif warm is not None:
                    fresh = self._agent_spec(str(paths.workspace), options, await hook_events, resume=False)
                    if fresh.connection_key() == warm.connection.spec.connection_key():
                        return fresh
            return await self._spec_with(tenant_id, options, hook_events)
        finally:
            if not hook_events.done():
                hook_events.cancel()
            elif not hook_events.cancelled():
                # Retrieved, so a failure here is not reported twice (the one raised is what counts).
                hook_events.exception()

    async def _spec_with(
        self, tenant_id: str, options: RunOptions, hook_events: asyncio.Future[tuple[str, ...]]
    ) -> AgentSpec:
        paths = await asyncio.to_thread(self.manager.launcher.paths, tenant_id, self.session_id)
        self._paths = paths
        workspace, agent_dir = str(paths.workspace), str(paths.agent_dir)
        self._tenant_id = tenant_id
        async with self.manager.db.session() as session:
            row = await SessionRepository(session).get(self.session_id)
        self._store = session_store_for(self.manager.settings, self.manager.db, tenant_id, self.session_id)
        if self._store is not None and self._pump is None:
            # The session may have run on another replica last: its transcript comes from the store.
            # (A live CLI of ours wrote the file itself, and holds the conversation.)
            await restore_transcript(self._store, agent_dir, workspace, self.session_id)
            if row is not None and row.fork_source_id is not None:
                await restore_transcript(self._store, agent_dir, workspace, row.fork_source_id)
        resume = await asyncio.to_thread(transcript_exists, agent_dir, workspace, self.session_id)
        fork_from = None
        # A fork's first connection: its parent's transcript was copied here (SessionControl.fork).
        if (
            not resume
            and row is not None
            and row.fork_source_id is not None
            and await asyncio.to_thread(transcript_exists, agent_dir, workspace, row.fork_source_id)
        ):
            fork_from = row.fork_source_id
        return self._agent_spec(
            workspace,
            options,
            await hook_events,
            resume=resume,
            fork_from=fork_from,
            resume_at=row.resume_at if row is not None and (resume or fork_from) else None,
        )

    def _agent_spec(
        self,
        workspace: str,
        options: RunOptions,
        hook_events: tuple[str, ...],
        *,
        resume: bool,
        fork_from: str | None = None,
        resume_at: str | None = None,
    ) -> AgentSpec:
        return agent_spec(
            self.session_id,
            workspace,
            options,
            hook_events=hook_events,
            mcp_servers=self.manager.mcp_registry.config_for(tuple(options.mcp_servers)) or None,
            setting_sources=tuple(self.manager.settings.agent_setting_sources),
            resume=resume,
            fork_from=fork_from,
            resume_at=resume_at,
        )

    def _needs_new_connection(self, spec: AgentSpec) -> bool:
        if self._connection_key != spec.connection_key():
            return True
        # A run's budget is its own: when what is left of the connection's limit is less, start afresh.
        budget = spec.max_budget_usd
        return budget is not None and (
            self._budget_limit is None or self._cost_so_far + budget > self._budget_limit
        )

    async def _ensure_connection(self, spec: AgentSpec, *, log_end: int | None = None) -> ConnectionPump:
        """The session's pump, on a new CLI when there is none (or `spec` needs another). `log_end`: the
        log's last seq as the run's begin left it, for a pooled (or early) CLI's first run."""
        if self._pump is not None and self._needs_new_connection(spec):
            await self._disconnect()
        # The log's end is read while the CLI starts: nothing appends to it meanwhile but this actor
        # (its run's RUNNING came first, and hooks are not logged before the pump).
        last_seq_read: asyncio.Future[int] | None = None
        if self._warm is not None and self._pump is None:
            if log_end is None:
                last_seq_read = asyncio.ensure_future(self._last_seq())
            else:
                # A new session's first run, begun by startRun: its own log's end, with no read (nothing
                # else has written to the session).
                last_seq_read = asyncio.get_running_loop().create_future()
                last_seq_read.set_result(log_end)
            try:
                # A CLI startRun started for this new session may still be connecting.
                await self._warm.started()
            except BaseException:
                last_seq_read.cancel()
                raise
        connection = self._take_warm(spec)
        if connection is None and self._warm is not None:
            # A pooled CLI started for other options (or a changed webhook set), or one that died.
            try:
                await self._disconnect()
            except BaseException:
                if last_seq_read is not None:
                    last_seq_read.cancel()
                raise
        if self._pump is None:
            # The CLI's cost figure is a running total that a resumed (or forked) process continues from
            # the transcript's last cost-state, not from zero: the per-run difference starts there, and
            # the CLI's limit is that total plus the run's budget. (A pooled CLI's session is new.)
            cost_so_far = 0.0
            limit = spec.max_budget_usd
            if connection is None:
                launcher = self.manager.launcher
                assert self._paths is not None, "_spec sets the session's paths first"
                launch = launcher.prepare(self._paths, f"{self.session_id}-{uuid.uuid4().hex[:8]}")
                self._launch = launch
                hooks = None
                if spec.hook_events:
                    timeout = self.manager.settings.webhook_timeout_seconds + HOOK_TIMEOUT_MARGIN_SECONDS
                    hooks = HookProvider(spec.hook_events, self.on_hook, timeout)
                source = spec.fork_from or (spec.session_id if spec.resume else None)
                if source is not None:
                    path = transcript_path(str(self._paths.agent_dir), spec.cwd, source)
                    cost_so_far = await asyncio.to_thread(restored_cost_usd, path)
                limit = cost_so_far + spec.max_budget_usd if spec.max_budget_usd is not None else None
                env = launch.env
                if self._store is not None:
                    # The SDK maps each mirrored line's file to its store key relative to the
                    # CLAUDE_CONFIG_DIR it reads here; a sandbox launcher sets the CLI's own inside and
                    # clears this one.
                    env = {**env, "CLAUDE_CONFIG_DIR": str(self._paths.agent_dir)}
                connection = AgentConnection(
                    dataclasses.replace(spec, env=env, cli_path=launch.cli_path, max_budget_usd=limit),
                    hooks,
                    ask_permission=self.permissions.ask,
                    session_store=self._store,
                )
                if last_seq_read is None:
                    last_seq_read = asyncio.ensure_future(self._last_seq())
                try:
                    await connection.connect()
                except BaseException:
                    last_seq_read.cancel()
                    raise
                last_seq = await last_seq_read
            else:
                last_seq = await (last_seq_read if last_seq_read is not None else self._last_seq())
            metrics.LIVE_SESSIONS.inc()
            self._drain_signals()
            self._cost_so_far = cost_so_far
            self._connection_key = spec.connection_key()
            self._budget_limit = limit
            self._pump = ConnectionPump(
                connection,
                self.manager.event_log,
                self.session_id,
                last_seq=last_seq,
                on_signal=self._signals.put_nowait,
                fence=self.fence,
                on_lease_lost=self._write_refused,
            )
        return self._pump

    async def _last_seq(self) -> int:
        async with self.manager.db.session() as session:
            return await SessionRepository(session).last_seq(self.session_id)

    def _take_warm(self, spec: AgentSpec) -> AgentConnection | None:
        """The pooled CLI when it was started for exactly this connection, else None."""
        warm = self._warm
        if warm is None or self._pump is not None:
            return None
        if not warm.connection.alive or warm.connection.spec.connection_key() != spec.connection_key():
            return None
        self._warm = None
        if warm.early:
            log.info("agent.started_early")
        else:
            metrics.WARM_POOL_USED.inc()
            log.info("agent.from_warm_pool")
        return warm.connection

    async def _rewind(self, command: RewindFiles) -> None:
        """Preview or restore the files as before a checkpoint, on this session's CLI (connected for the
        purpose when it was not: resumed, with checkpointing, in its sandbox, under this actor's lease)."""
        self._working = True
        try:
            answer = await self._rewind_answer(command)
        except Exception as exc:
            log.exception("rewind.failed")
            answer = {"error": f"internal error: {type(exc).__name__}"}
        finally:
            self._working = False
        await self._reply(command.reply_to, answer)

    async def _rewind_answer(self, command: RewindFiles) -> dict[str, Any]:
        async with self.manager.db.session() as session:
            row = await SessionRepository(session).get(self.session_id)
            latest = await RunRepository(session).latest_for_session(self.session_id)
        if row is None or latest is None:
            return {"error": "the session has no checkpoints"}
        spec = await self._spec(row.tenant_id, latest.options)
        assert self._paths is not None
        agent_dir = str(self._paths.agent_dir)
        if self._store is not None:
            # CheckpointControl refuses it first; this holds for a command that reached us anyway.
            return {"error": "SESSION_STORE=database keeps no file checkpoints"}
        if not spec.resume:
            return {"error": "the agent has no transcript for this session, so no file checkpoints"}
        before: str | None = None
        if command.conversation:
            path = transcript_path(agent_dir, spec.cwd, self.session_id)
            prompt = await asyncio.to_thread(transcript_message, path, command.checkpoint_id)
            if prompt is None:
                return {"error": "the agent's transcript has no prompt with this checkpoint id"}
            if prompt.parent_uuid is None:
                return {
                    "error": "the conversation cannot go back to before its first prompt; rewind the "
                    "files alone, or start a new session"
                }
            before = prompt.parent_uuid
        try:
            pump = await self._ensure_connection(spec)
            preview = await pump.connection.preview_rewind(command.checkpoint_id)
            if not preview.can_rewind:
                return {"error": preview.error or "the agent cannot rewind to this checkpoint"}
            files = [_relative(path, spec.cwd) for path in preview.files_changed]
            answer: dict[str, Any] = {
                "filesChanged": files,
                "insertions": preview.insertions,
                "deletions": preview.deletions,
                "applied": False,
            }
            if command.dry_run:
                return answer
            await pump.connection.rewind(command.checkpoint_id)
        except AgentFailure as exc:
            await self._disconnect()
            return {"error": f"the agent could not rewind: {exc.reason}"}
        pump.record(
            AgentOutput(
                EventKind.FILES_REWOUND,
                {
                    "checkpoint_id": command.checkpoint_id,
                    "files_changed": files,
                    "conversation": command.conversation,
                },
            )
        )
        await pump.flush()
        if before is not None:
            async with self.manager.db.session() as session:
                await SessionRepository(session).set_resume_point(
                    self.session_id, resume_at=before, fork_source_id=row.fork_source_id
                )
                await session.commit()
            # The next run connects anew, loading the conversation only up to `before`.
            await self._disconnect()
        return {**answer, "applied": True}

    async def on_hook(self, event: str, data: dict[str, Any], tool_use_id: str | None) -> dict[str, Any]:
        """A hook event of this session's CLI: ask the tenant's webhooks, log each call as HookFired."""
        run, pump, tenant_id = self.current_run, self._pump, self._tenant_id
        if tenant_id is None:
            return {}
        call = HookCall(
            tenant_id=tenant_id,
            session_id=self.session_id,
            run_id=run.id if run is not None else None,
            hook_event=event,
            input=data,
            tool_use_id=tool_use_id,
        )
        try:
            result = await self.manager.webhooks.dispatch(call)
        except Exception:
            # The webhooks could not even be looked up: decide as a failed call would.
            log.exception("webhook.dispatch_failed", hook_event=event)
            return unavailable_output(event)
        if pump is not None:
            for payload in result.fired:
                pump.record(AgentOutput(EventKind.HOOK_FIRED, payload))
        return result.output

    def _drain_signals(self) -> None:
        while not self._signals.empty():
            self._signals.get_nowait()

    async def _disconnect(self, *, interrupt_first: bool = True) -> None:
        """Stop the CLI. The stop runs as a task of its own, so cancelling the caller (a lease lost
        mid-stop) cannot leave the process running; a later call waits for the same stop."""
        warm, self._warm = self._warm, None
        if warm is not None:
            # Never used: nothing of its session is lost (its folders stay, they are the session's).
            await warm.stop()
        pump, self._pump = self._pump, None
        launch, self._launch = self._launch, None
        if pump is not None:
            metrics.LIVE_SESSIONS.dec()
            self._closing_pump = pump
            self._stopping = asyncio.create_task(self._stop(pump, launch, interrupt_first))
        elif launch is not None:
            await self.manager.launcher.release(launch)
        if self._stopping is not None and not self._stopping.done():
            await asyncio.shield(self._stopping)

    async def _disconnect_within(self, seconds: float, *, interrupt_first: bool = True) -> None:
        """_disconnect, bounded: past `seconds` the stop is cancelled, and the pump's tasks with it, so
        nothing more is written after what the caller writes next (the run's outcome)."""
        try:
            await asyncio.shield(asyncio.wait_for(self._disconnect(interrupt_first=interrupt_first), seconds))
        except TimeoutError:
            # The pump's writer too, not only the stop: a stop still waiting for the CLI to exit never
            # reached the writer's cancellation, and it went on committing after the outcome.
            if self._closing_pump is not None:
                self._closing_pump.abandon()
            if self._stopping is not None:
                self._stopping.cancel()

    async def _stop(self, pump: ConnectionPump, launch: Launch | None, interrupt_first: bool) -> None:
        try:
            await pump.close(interrupt_first=interrupt_first)
        finally:
            if self._closing_pump is pump:
                self._closing_pump = None
            if launch is not None:
                await self.manager.launcher.release(launch)

    def _hold_model_pass(self, held: bool) -> None:
        """A CLI may call the model only while one of its session's runs executes."""
        if self._launch is not None and self._launch.grant is not None:
            self._launch.grant.open = held

    async def _execute(self, run: Run) -> Outcome:
        known = self._hook_events.pop(run.id, None)
        log_end = self._log_end.pop(run.id, None)
        ahead = self._ahead
        if ahead is not None and ahead.run_id == run.id and ahead.confirmed:
            # Its prompt went to the CLI while the run was committed (send_ahead): the turn is under way.
            self._ahead = None
            return await self._await_result(run)
        # A prompt that went ahead and was not confirmed (the tenant's hooks changed meanwhile): undone,
        # then sent again as for any run.
        await self.undo_ahead()
        try:
            spec = await self._spec(run.tenant_id, run.options, live_ok=True, known_hook_events=known)
        except PolicyViolation as exc:
            # The registry changed (a restart) between queueing and running: the run cannot have it.
            return Outcome("FAILED", error=exc.message)
        try:
            pump = await self._ensure_connection(spec, log_end=log_end)
        except AgentFailure as exc:
            return Outcome("FAILED", error=f"the agent could not start: {exc.reason}")
        try:
            return await self._send_and_wait(run, pump)
        finally:
            if spec.fork_from is not None or spec.resume_at is not None:
                await asyncio.shield(self._resume_point_used(spec))

    async def _resume_point_used(self, spec: AgentSpec) -> None:
        """A fork or a rewound conversation took effect once the session's own transcript exists; the
        connections after it resume that transcript as it stands."""
        assert self._paths is not None
        agent_dir = str(self._paths.agent_dir)
        if not await asyncio.to_thread(transcript_exists, agent_dir, spec.cwd, self.session_id):
            return
        try:
            async with self.manager.db.session() as session:
                await SessionRepository(session).set_resume_point(
                    self.session_id, resume_at=None, fork_source_id=None
                )
                await session.commit()
        except Exception:
            # Kept for the next connection, which then loads the same point again: logged, not fatal.
            log.warning("session.resume_point_not_cleared", exc_info=True)
            return
        if spec.fork_from is not None:
            # The fork's own transcript holds the conversation now; the parent's copy has served.
            await asyncio.to_thread(remove_transcript, agent_dir, spec.cwd, spec.fork_from)
            if self._store is not None:
                try:
                    await self._store.delete_transcript(spec.fork_from)
                except Exception:
                    # Unused from now on (the fork resumes its own transcript); it goes with the session.
                    log.warning("session.fork_copy_not_removed", exc_info=True)

    async def _send_and_wait(self, run: Run, pump: ConnectionPump) -> Outcome:
        pump.current_run_id = run.id
        self._hold_model_pass(True)
        self._drain_signals()
        try:
            await pump.connection.send(run.prompt, run.prompt_uuid)
        except AgentFailure as exc:
            await self._disconnect()
            return Outcome("FAILED", error=f"the agent did not take the prompt: {exc.reason}")
        return await self._await_result(run)

    async def _await_result(self, run: Run) -> Outcome:
        """Wait for this run's result, acting on interrupts and the run's time limit on the way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.manager.settings.run_timeout_seconds
        stopping_since: float | None = None
        timed_out = False
        while True:
            if stopping_since is None:
                signal = await self._next_signal(until=deadline, interruptible=True)
            else:
                signal = await self._next_signal(
                    until=stopping_since + INTERRUPT_GRACE_SECONDS, interruptible=False
                )
            if signal is _INTERRUPTED or signal is None:
                if stopping_since is None:
                    timed_out = signal is None
                    stopping_since = loop.time()
                    await self._pump_interrupt()
                    continue
                # The CLI ignored the interrupt: drop the process (asking it again would only cost
                # another control timeout); the session resumes on the next run.
                await self._disconnect(interrupt_first=False)
                if not timed_out:
                    return Outcome("INTERRUPTED", error=FORCED_STOP_ERROR)
                return self._stopped_outcome(timed_out, None)
            if isinstance(signal, ConnectionLost):
                await self._disconnect()
                if stopping_since is not None:
                    return self._stopped_outcome(timed_out, None)
                return Outcome("FAILED", error=signal.reason)
            if isinstance(signal, ResultSeen) and self._answers(run, signal):
                return self._result_outcome(
                    signal, interrupted=stopping_since is not None, timed_out=timed_out
                )

    async def _next_signal(self, *, until: float, interruptible: bool) -> PumpSignal | _Interrupted | None:
        """The next pump signal; _INTERRUPTED if an interrupt came first; None at the deadline."""
        timeout = max(0.0, until - asyncio.get_running_loop().time())
        signal_task: asyncio.Task[PumpSignal] = asyncio.create_task(self._signals.get())
        waiters: set[asyncio.Task[Any]] = {signal_task}
        interrupt_task: asyncio.Task[bool] | None = None
        if interruptible:
            interrupt_task = asyncio.create_task(self._interrupt.wait())
            waiters.add(interrupt_task)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                if task is not signal_task:
                    task.cancel()
        if signal_task.done():
            return signal_task.result()
        signal_task.cancel()
        try:
            # A signal that arrived while cancelling must not be lost (the interrupt flag stays set).
            return await signal_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        if interrupt_task is not None and interrupt_task.done() and not interrupt_task.cancelled():
            return _INTERRUPTED
        return None

    @staticmethod
    def _answers(run: Run, signal: ResultSeen) -> bool:
        # Injected turns (background tasks) end with results of their own: only ours ends the run.
        uuids = signal.output.result_uuids
        return not uuids or run.prompt_uuid in uuids

    async def _pump_interrupt(self) -> None:
        if self._pump is not None:
            await self._pump.connection.interrupt()

    def _stopped_outcome(self, timed_out: bool, result: dict[str, Any] | None) -> Outcome:
        if timed_out:
            return Outcome("FAILED", error="the run exceeded its time limit", result=result)
        return Outcome("INTERRUPTED", result=result)

    def _result_outcome(self, signal: ResultSeen, *, interrupted: bool, timed_out: bool) -> Outcome:
        payload = signal.output.payload
        total = signal.output.total_cost_usd
        cost: float | None = None
        if total is not None:
            # The CLI reports a running total (continued across resumes, see _ensure_connection); the
            # run's share is the difference.
            cost = max(0.0, total - self._cost_so_far)
            self._cost_so_far = total
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        if interrupted or timed_out:
            outcome = self._stopped_outcome(timed_out, payload)
            return Outcome(outcome.status, outcome.error, payload, cost, usage)
        if payload.get("is_error"):
            return Outcome("FAILED", error=_result_error(payload), result=payload, cost_usd=cost, usage=usage)
        return Outcome("COMPLETED", result=payload, cost_usd=cost, usage=usage)


def agent_spec(
    session_id: str,
    workspace: str,
    options: RunOptions,
    *,
    hook_events: tuple[str, ...],
    mcp_servers: dict[str, Any] | None = None,
    setting_sources: tuple[str, ...] = (),
    resume: bool = False,
    fork_from: str | None = None,
    resume_at: str | None = None,
) -> AgentSpec:
    """The CLI connection a run of these options needs (the warm pool starts its CLIs with it too, so
    a pooled CLI fits a run exactly when their connection keys are equal)."""
    return AgentSpec(
        session_id=session_id,
        cwd=workspace,
        resume=resume,
        fork_from=fork_from,
        resume_at=resume_at,
        # Set per connection from its Launch (_ensure_connection).
        env={},
        model=options.model,
        fallback_model=options.fallback_model,
        system_prompt=options.system_prompt,
        system_prompt_preset=options.system_prompt_preset,
        thinking=options.thinking,
        effort=options.effort,
        mcp_servers=mcp_servers,
        setting_sources=setting_sources,
        permission_mode=options.permission_mode,
        allowed_tools=tuple(options.allowed_tools or ()),
        disallowed_tools=tuple(options.disallowed_tools or ()),
        max_turns=options.max_turns,
        max_budget_usd=options.max_budget_usd,
        output_schema=options.output_schema,
        agents=options.agents,
        hook_events=hook_events,
    )


def _relative(path: str, workspace: str) -> str:
    """A changed file as the caller knows it: relative to the session's workspace."""
    prefix = workspace.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def _result_error(payload: dict[str, Any]) -> str:
    """A run's error text from an error result: the model API's status when it failed the run, else
    what ended it; then the detail."""
    errors = [str(error) for error in payload.get("errors") or [] if error]
    detail = str(payload.get("result") or "; ".join(errors))[:2000]
    status = payload.get("api_error_status")
    subtype = payload.get("subtype")
    if status:
        text = f"model API status {status}"
    elif subtype and subtype != "success":
        text = f"the agent ended with {subtype}"
    else:
        # The CLI says "success" for a turn that ended on an error it reported as text.
        text = "the agent reported an error"
    return f"{text}: {detail}" if detail else text
