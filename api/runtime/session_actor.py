"""One task per live session: owns its CLI connection and executes its runs one at a time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from api.runtime import lifecycle
from api.runtime.policy import RunOptions
from api.runtime.pump import ConnectionLost, ConnectionPump, PumpSignal, ResultSeen
from api.runtime.sdk_adapter import AgentConnection, AgentFailure, AgentSpec
from persistence.models import Run
from persistence.repositories.sessions import SessionRepository

if TYPE_CHECKING:
    from api.runtime.run_manager import RunManager

log = structlog.get_logger(__name__)

# After an interrupt the CLI answers with a result within milliseconds; past this it is presumed stuck.
INTERRUPT_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class Outcome:
    status: str
    error: str | None = None
    result: dict[str, object] | None = None
    cost_usd: float = 0.0


class SessionActor:
    def __init__(self, manager: RunManager, session_id: str) -> None:
        self.manager = manager
        self.session_id = session_id
        self.current_run: Run | None = None
        self.closing = False
        self._queue: asyncio.Queue[Run] = asyncio.Queue()
        self._pump: ConnectionPump | None = None
        self._signals: asyncio.Queue[PumpSignal] = asyncio.Queue()
        self._interrupt = asyncio.Event()
        self._cost_so_far = 0.0
        self.task = asyncio.create_task(self._main(), name=f"session-{session_id}")

    @property
    def busy(self) -> bool:
        return self.current_run is not None or not self._queue.empty()

    def submit(self, run: Run) -> None:
        self._queue.put_nowait(run)

    def interrupt(self, run_id: str) -> bool:
        if self.current_run is not None and self.current_run.id == run_id:
            self._interrupt.set()
            return True
        return False

    async def _main(self) -> None:
        settings = self.manager.settings
        try:
            while True:
                try:
                    run = await asyncio.wait_for(self._queue.get(), timeout=settings.idle_client_seconds)
                except TimeoutError:
                    if self._queue.empty():
                        # No await between the check and leaving the registry: the dispatcher, on the
                        # same loop, either sees this actor gone or submits before the check.
                        self.closing = True
                        self.manager.forget_actor(self)
                        return
                    continue
                await self._run(run)
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
        try:
            log.info("run.started")
            outcome = await self._execute(run)
        except asyncio.CancelledError:
            outcome = Outcome("FAILED", error="the server shut down during the run")
            raise
        except Exception as exc:  # noqa: BLE001 - a run's failure must never kill the actor
            log.exception("run.crashed")
            outcome = Outcome("FAILED", error=f"internal error: {type(exc).__name__}")
        finally:
            if self._pump is not None:
                self._pump.current_run_id = None
            transition = await asyncio.shield(
                lifecycle.finish(
                    self.manager.event_log,
                    run.id,
                    status=outcome.status,
                    error=outcome.error,
                    result=outcome.result,  # type: ignore[arg-type]
                    cost_usd=outcome.cost_usd,
                )
            )
            await lifecycle.announce(self.manager.event_log, transition)
            log.info("run.finished", status=outcome.status, error=outcome.error)
            structlog.contextvars.unbind_contextvars("run_id", "session_id")
            self.current_run = None
            self.manager.run_finished()

    async def _spec(self, run: Run) -> AgentSpec:
        manager = self.manager
        async with manager.db.session() as session:
            row = await SessionRepository(session).get(run.session_id)
        resume = bool(row and row.transcript_started)
        options = RunOptions.from_json(run.options)
        workspace = manager.workspace_for(run.session_id)
        return AgentSpec(
            session_id=run.session_id,
            cwd=str(workspace),
            resume=resume,
            env=manager.agent_env(run.session_id),
            model=options.model,
            system_prompt=options.system_prompt,
            permission_mode=options.permission_mode,
            allowed_tools=tuple(options.allowed_tools or ()),
            disallowed_tools=tuple(options.disallowed_tools or ()),
            max_turns=options.max_turns,
            max_budget_usd=options.max_budget_usd,
            output_schema=options.output_schema,
            agents=options.agents,
        )

    async def _ensure_connection(self, spec: AgentSpec) -> ConnectionPump:
        if self._pump is not None and self._pump.connection.spec.connection_key() != spec.connection_key():
            await self._disconnect()
        if self._pump is None:
            connection = AgentConnection(spec)
            await connection.connect()
            async with self.manager.db.session() as session:
                last_seq = await SessionRepository(session).last_seq(self.session_id)
            self._drain_signals()
            self._cost_so_far = 0.0
            self._pump = ConnectionPump(
                connection, self.manager.event_log, self.session_id, last_seq=last_seq,
                on_signal=self._signals.put_nowait,
            )
        return self._pump

    def _drain_signals(self) -> None:
        while not self._signals.empty():
            self._signals.get_nowait()

    async def _disconnect(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            await pump.close()

    async def _execute(self, run: Run) -> Outcome:
        spec = await self._spec(run)
        try:
            pump = await self._ensure_connection(spec)
        except AgentFailure as exc:
            return Outcome("FAILED", error=f"the agent could not start: {exc.reason}")
        if not spec.resume:
            async with self.manager.db.session() as session:
                await SessionRepository(session).mark_transcript_started(self.session_id)
                await session.commit()
        pump.current_run_id = run.id
        self._drain_signals()
        try:
            await pump.connection.send(run.prompt, run.prompt_uuid)
        except AgentFailure as exc:
            await self._disconnect()
            return Outcome("FAILED", error=f"the agent did not take the prompt: {exc.reason}")
        return await self._await_result(run)

    async def _await_result(self, run: Run) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.manager.settings.run_timeout_seconds
        interrupted_at: float | None = None
        timed_out = False
        while True:
            now = loop.time()
            limit = deadline if interrupted_at is None else interrupted_at + INTERRUPT_GRACE_SECONDS
            signal_task = asyncio.ensure_future(self._signals.get())
            waiters: set[asyncio.Future[object]] = {signal_task}  # type: ignore[arg-type]
            interrupt_task: asyncio.Future[object] | None = None
            if interrupted_at is None:
                interrupt_task = asyncio.ensure_future(self._interrupt.wait())
                waiters.add(interrupt_task)
            done, _ = await asyncio.wait(waiters, timeout=max(0.0, limit - now), return_when="FIRST_COMPLETED")
            if interrupt_task is not None and not interrupt_task.done():
                interrupt_task.cancel()
            if signal_task not in done:
                signal_task.cancel()
                if interrupt_task is not None and interrupt_task in done:
                    interrupted_at = loop.time()
                    await self._pump_interrupt()
                    continue
                if interrupted_at is None:
                    timed_out = True
                    interrupted_at = loop.time()
                    await self._pump_interrupt()
                    continue
                # The CLI ignored the interrupt: drop the process; the session resumes on the next run.
                await self._disconnect()
                return self._stopped_outcome(timed_out, None)
            signal = signal_task.result()
            if isinstance(signal, ConnectionLost):
                await self._disconnect()
                if interrupted_at is not None:
                    return self._stopped_outcome(timed_out, None)
                return Outcome("FAILED", error=signal.reason)
            if isinstance(signal, ResultSeen) and self._answers(run, signal):
                return self._result_outcome(signal, interrupted=interrupted_at is not None, timed_out=timed_out)

    @staticmethod
    def _answers(run: Run, signal: ResultSeen) -> bool:
        # Injected turns (background tasks) end with results of their own: only ours ends the run.
        uuids = signal.output.result_uuids
        return not uuids or run.prompt_uuid in uuids

    async def _pump_interrupt(self) -> None:
        if self._pump is not None:
            await self._pump.connection.interrupt()

    def _stopped_outcome(self, timed_out: bool, result: dict[str, object] | None) -> Outcome:
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


def _result_error(payload: dict[str, object]) -> str:
    errors = payload.get("errors") or []
    detail = payload.get("result") or "; ".join(str(error) for error in errors if error)  # type: ignore[union-attr]
    status = payload.get("api_error_status")
    parts = [f"the agent ended with {payload.get('subtype')}"]
    if status:
        parts.append(f"model API status {status}")
    if detail:
        parts.append(str(detail)[:2000])
    return ": ".join(parts[:1]) + (" (" + "; ".join(parts[1:]) + ")" if len(parts) > 1 else "")
