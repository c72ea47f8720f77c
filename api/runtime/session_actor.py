"""One task per live session: owns its CLI connection and executes its runs one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from sqlalchemy.exc import SQLAlchemyError

from api.control.commands import (
    Command,
    DecidePermission,
    GetContextUsage,
    Interrupt,
    SetModel,
    SetPermissionMode,
)
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
    transcript_exists,
)
from api.webhooks.dispatcher import HookCall, unavailable_output
from persistence.models import Run
from persistence.repositories.sessions import SessionRepository

if TYPE_CHECKING:
    from api.runtime.run_manager import RunManager
    from api.sandbox.launcher import Launch
    from api.sandbox.layout import SessionPaths

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
    cost_usd: float = 0.0


class _Interrupted:
    """The marker _next_signal returns when an interrupt was asked for."""


_INTERRUPTED = _Interrupted()


class SessionActor:
    def __init__(self, manager: RunManager, session_id: str) -> None:
        self.manager = manager
        self.session_id = session_id
        self.current_run: Run | None = None
        self.closing = False
        # None asks _main to leave (evict()).
        self._queue: asyncio.Queue[Run | None] = asyncio.Queue()
        self.last_active = asyncio.get_running_loop().time()
        self._pump: ConnectionPump | None = None
        self._signals: asyncio.Queue[PumpSignal] = asyncio.Queue()
        self._interrupt = asyncio.Event()
        self._cost_so_far = 0.0
        self._abandon_reason: str | None = None
        self._give_up = False
        self._launch: Launch | None = None
        self._paths: SessionPaths | None = None
        self._tenant_id: str | None = None
        self.permissions = PermissionBroker(
            manager.event_log,
            session_id,
            timeout_seconds=manager.settings.permission_timeout_seconds,
            poll_seconds=manager.settings.dispatch_poll_seconds,
            current_run=self._run_and_tenant,
            before_request=self._flush_log,
        )
        self.task = asyncio.create_task(self._main(), name=f"session-{session_id}")

    @property
    def busy(self) -> bool:
        return self.current_run is not None or not self._queue.empty()

    @property
    def has_agent(self) -> bool:
        """A CLI process is alive, or about to be, for this session (it counts against the budget)."""
        return not self.closing and (self._pump is not None or self.busy)

    def evict(self) -> bool:
        """Stop this session's idle CLI to make room for another's; False when it is in use.

        Nothing is lost: the transcript is on disk and the session's next run resumes it."""
        if self.closing or self.busy or self._pump is None:
            return False
        # No await before leaving the registry: the dispatcher, on the same loop, sees it gone.
        self.closing = True
        self.manager.forget_actor(self)
        self._queue.put_nowait(None)
        return True

    def submit(self, run: Run) -> None:
        self._queue.put_nowait(run)

    def abandon(self, reason: str) -> None:
        """Stop at once: the current run ends FAILED with `reason` and the CLI is closed."""
        self._abandon_reason = reason
        self.task.cancel()

    async def handle(self, command: Command) -> bool:
        """The one entry point for control commands; False when this actor cannot act on it."""
        if isinstance(command, Interrupt):
            return self.interrupt(command.run_id)
        if isinstance(command, DecidePermission):
            return self.permissions.poke(command.request_id)
        pump = self._pump
        if pump is None:
            return False
        try:
            if isinstance(command, SetModel):
                await pump.connection.set_model(command.model)
            elif isinstance(command, SetPermissionMode):
                await pump.connection.set_permission_mode(command.mode)
            elif isinstance(command, GetContextUsage):
                usage = await pump.connection.context_usage()
                await self.manager.bus.publish(command.reply_to, orjson.dumps(usage).decode())
        except Exception:
            log.warning("control.command_failed", command=repr(command), exc_info=True)
            return False
        log.info("control.command_applied", command=repr(command))
        return True

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

    async def _main(self) -> None:
        settings = self.manager.settings
        try:
            while True:
                try:
                    run = await asyncio.wait_for(self._queue.get(), timeout=settings.idle_client_seconds)
                    if run is None:
                        # evict(): the replica needs this idle CLI's memory for another session.
                        return
                except TimeoutError:
                    if self._queue.empty():
                        # No await between the check and leaving the registry: the dispatcher, on the
                        # same loop, either sees this actor gone or submits before the check.
                        self.closing = True
                        self.manager.forget_actor(self)
                        return
                    continue
                await self._run(run)
                if self._give_up:
                    return
        finally:
            self.closing = True
            self.manager.forget_actor(self)
            await self._disconnect()
            await self.manager.release_lease(self.session_id)

    async def _run(self, run: Run) -> None:
        self.current_run = run
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
            if stop_first or self._abandon_reason is not None:
                # Stop the CLI and commit what it said before the run reads as over: the final status is
                # the run's last event, and another replica may hold the lease next. Bounded, so a
                # shutdown ends on time (the pump's tasks are cancelled past it; nothing more is written).
                with contextlib.suppress(TimeoutError):
                    await asyncio.shield(asyncio.wait_for(self._disconnect(), STOP_BEFORE_RECORD_SECONDS))
            # Nothing the run asked stays pending once it is over (its waiting calls deny).
            await asyncio.shield(
                self.permissions.cancel_run(run.id, f"the run ended: {outcome.error or outcome.status}")
            )
            if self._pump is not None:
                self._pump.current_run_id = None
            self._hold_model_pass(False)
            if not await asyncio.shield(self._record(run, outcome)):
                # The outcome could not be written: give the session up, so the lease lapses and
                # whichever replica reaps the run settles it, rather than leave it RUNNING forever.
                self._give_up = True
            log.info("run.finished", status=outcome.status, error=outcome.error)
            metrics.RUNS_RUNNING.dec()
            metrics.RUNS_FINISHED.labels(status=outcome.status).inc()
            metrics.RUN_SECONDS.observe(asyncio.get_running_loop().time() - started)
            structlog.contextvars.unbind_contextvars("run_id", "session_id")
            self.current_run = None
            self.last_active = asyncio.get_running_loop().time()
            self.manager.run_finished()

    async def _record(self, run: Run, outcome: Outcome) -> bool:
        """Write the run's outcome, retrying through a short database outage."""
        delay = 0.5
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                transition = await lifecycle.finish(
                    self.manager.event_log,
                    run.id,
                    status=outcome.status,
                    error=outcome.error,
                    result=outcome.result,
                    cost_usd=outcome.cost_usd,
                )
                await lifecycle.announce(self.manager.event_log, transition)
                return True
            except Exception:
                log.warning("run.record_failed", attempt=attempt, exc_info=True)
                if attempt < RECORD_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
        return False

    async def _spec(self, run: Run) -> AgentSpec:
        options = RunOptions.from_json(run.options)
        paths = await asyncio.to_thread(self.manager.launcher.paths, run.tenant_id, run.session_id)
        self._paths = paths
        workspace = str(paths.workspace)
        self._tenant_id = run.tenant_id
        return AgentSpec(
            session_id=run.session_id,
            cwd=workspace,
            resume=await asyncio.to_thread(
                transcript_exists, str(paths.agent_dir), workspace, run.session_id
            ),
            # Set per connection from its Launch (_ensure_connection).
            env={},
            model=options.model,
            system_prompt=options.system_prompt,
            permission_mode=options.permission_mode,
            allowed_tools=tuple(options.allowed_tools or ()),
            disallowed_tools=tuple(options.disallowed_tools or ()),
            max_turns=options.max_turns,
            max_budget_usd=options.max_budget_usd,
            output_schema=options.output_schema,
            agents=options.agents,
            hook_events=await self.manager.webhooks.events_for(run.tenant_id),
        )

    async def _ensure_connection(self, spec: AgentSpec) -> ConnectionPump:
        if self._pump is not None and self._pump.connection.spec.connection_key() != spec.connection_key():
            await self._disconnect()
        if self._pump is None:
            launcher = self.manager.launcher
            assert self._paths is not None, "_spec sets the session's paths first"
            launch = launcher.prepare(self._paths, f"{self.session_id}-{uuid.uuid4().hex[:8]}")
            self._launch = launch
            hooks = None
            if spec.hook_events:
                timeout = self.manager.settings.webhook_timeout_seconds + HOOK_TIMEOUT_MARGIN_SECONDS
                hooks = HookProvider(spec.hook_events, self._on_hook, timeout)
            connection = AgentConnection(
                dataclasses.replace(spec, env=launch.env, cli_path=launch.cli_path),
                hooks,
                ask_permission=self.permissions.ask,
            )
            await connection.connect()
            metrics.LIVE_SESSIONS.inc()
            async with self.manager.db.session() as session:
                last_seq = await SessionRepository(session).last_seq(self.session_id)
            self._drain_signals()
            self._cost_so_far = 0.0
            self._pump = ConnectionPump(
                connection,
                self.manager.event_log,
                self.session_id,
                last_seq=last_seq,
                on_signal=self._signals.put_nowait,
            )
        return self._pump

    async def _on_hook(self, event: str, data: dict[str, Any], tool_use_id: str | None) -> dict[str, Any]:
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
        pump, self._pump = self._pump, None
        if pump is not None:
            metrics.LIVE_SESSIONS.dec()
            await pump.close(interrupt_first=interrupt_first)
        launch, self._launch = self._launch, None
        if launch is not None:
            self.manager.launcher.release(launch)

    def _hold_model_pass(self, held: bool) -> None:
        """A CLI may call the model only while one of its session's runs executes."""
        if self._launch is not None and self._launch.grant is not None:
            self._launch.grant.open = held

    async def _execute(self, run: Run) -> Outcome:
        spec = await self._spec(run)
        try:
            pump = await self._ensure_connection(spec)
        except AgentFailure as exc:
            return Outcome("FAILED", error=f"the agent could not start: {exc.reason}")
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
        cost = 0.0
        if total is not None:
            # The CLI reports a running total per process; the run's share is the difference.
            cost = max(0.0, total - self._cost_so_far)
            self._cost_so_far = total
        if interrupted or timed_out:
            outcome = self._stopped_outcome(timed_out, payload)
            return Outcome(outcome.status, outcome.error, payload, cost)
        if payload.get("is_error"):
            return Outcome("FAILED", error=_result_error(payload), result=payload, cost_usd=cost)
        return Outcome("COMPLETED", result=payload, cost_usd=cost)


def _result_error(payload: dict[str, Any]) -> str:
    """A run's error text from an error result: what ended it, the model API status, the detail."""
    errors = [str(error) for error in payload.get("errors") or [] if error]
    detail = payload.get("result") or "; ".join(errors)
    status = payload.get("api_error_status")
    extras = [f"model API status {status}"] if status else []
    if detail:
        extras.append(str(detail)[:2000])
    text = f"the agent ended with {payload.get('subtype')}"
    return f"{text} ({'; '.join(extras)})" if extras else text
