"""Drains one agent connection into the event log, always, whoever is watching.

The SDK buffers only 100 messages and answers control requests (interrupt) from the same reader, so a
slow database must never stall the SDK: a reader task moves messages into an unbounded in-memory inbox
at once, and a writer task commits them to the log in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from api.events.log import EventLog
from api.events.records import EventKind, EventRecord, NewEvent
from api.runtime.sdk_adapter import AgentConnection, AgentFailure, AgentOutput
from persistence.models import utcnow
from persistence.repositories.leases import Fence, StaleLease

log = structlog.get_logger(__name__)

BATCH_LIMIT = 200
# How long the writer waits after a turn's init message for what follows it (ConnectionPump._write).
TURN_START_LINGER_SECONDS = 0.005
DATABASE_UNAVAILABLE = "the database was unavailable, so the run could not be recorded"


@dataclass(frozen=True)
class ResultSeen:
    output: AgentOutput
    record: EventRecord


@dataclass(frozen=True)
class ConnectionLost:
    reason: str


PumpSignal = ResultSeen | ConnectionLost


def _opens_turn(item: object) -> bool:
    return (
        isinstance(item, AgentOutput)
        and item.kind is EventKind.SYSTEM
        and item.payload.get("subtype") == "init"
    )


# How long a flush waits for the writer before going on without it (a stalled database is reported
# through ConnectionLost anyway).
FLUSH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class _Flush:
    """A marker in the inbox: resolved once everything read before it is committed and published."""

    done: asyncio.Future[None]


class ConnectionPump:
    """Reader + writer for one connection. `current_run_id` tags what the writer commits."""

    def __init__(
        self,
        connection: AgentConnection,
        event_log: EventLog,
        session_id: str,
        *,
        last_seq: int,
        on_signal: Callable[[PumpSignal], None],
        fence: Fence | None = None,
        on_lease_lost: Callable[[], None] | None = None,
    ) -> None:
        self.connection = connection
        self.event_log = event_log
        self.session_id = session_id
        self.current_run_id: str | None = None
        self.last_seq = last_seq
        self._on_signal = on_signal
        # The session lease's holder writes the log; once the token is stale, nothing more is written.
        self._fence = fence
        self._on_lease_lost = on_lease_lost
        self._fence_refused = False
        self._ended = False
        # Cleared while a run's begin commits after its prompt went out (hold()): nothing of its turn
        # may be logged before its run exists, and if the begin fails, nothing of it ever is.
        self._may_write = asyncio.Event()
        self._may_write.set()
        self._inbox: asyncio.Queue[AgentOutput | ConnectionLost | _Flush] = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._read(), name=f"pump-read-{session_id}"),
            asyncio.create_task(self._write(), name=f"pump-write-{session_id}"),
        ]

    def hold(self) -> None:
        """Commit nothing read from now on until release() (or terminate(): never)."""
        self._may_write.clear()

    def release(self) -> None:
        self._may_write.set()

    def record(self, output: AgentOutput) -> None:
        """An event of the server's own about this connection (a webhook call), logged in stream order."""
        if not self._ended:
            self._inbox.put_nowait(output)

    async def _read(self) -> None:
        try:
            async for output in self.connection.outputs():
                self._inbox.put_nowait(output)
        except AgentFailure as exc:
            self._inbox.put_nowait(ConnectionLost(exc.reason))
        except Exception as exc:
            # Any reader death must reach the run as a failure, never leave it waiting.
            log.exception("pump.reader_crashed")
            self._inbox.put_nowait(ConnectionLost(f"agent stream failed: {exc}"))

    async def _write(self) -> None:
        while not self._ended:
            batch = [await self._inbox.get()]
            while len(batch) < BATCH_LIMIT and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            if _opens_turn(batch[-1]):
                # The CLI follows a turn's init with its status a moment later: one commit for both,
                # so the turn's first answer does not queue behind a second one.
                with contextlib.suppress(TimeoutError):
                    batch.append(await asyncio.wait_for(self._inbox.get(), TURN_START_LINGER_SECONDS))
                while len(batch) < BATCH_LIMIT and not self._inbox.empty():
                    batch.append(self._inbox.get_nowait())
            if not self._may_write.is_set():
                await self._may_write.wait()
            if self._fence_refused:
                return
            try:
                await self._commit_batch(batch)
            except StaleLease:
                log.error("lease.write_refused", session_id=self.session_id)
                self._ended = True
                for item in batch:
                    if isinstance(item, _Flush) and not item.done.done():
                        item.done.set_result(None)
                if self._on_lease_lost is not None:
                    self._on_lease_lost()
                return
            except Exception:
                # The database is the truth: if it is unreachable, the run cannot be recorded honestly.
                log.exception("pump.write_failed", session_id=self.session_id)
                self._on_signal(ConnectionLost(DATABASE_UNAVAILABLE))
                return

    async def flush(self) -> None:
        """Wait until every message read so far is in the log, so what is appended next follows it
        (a permission request after the assistant message that asked for the tool)."""
        if self._ended:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Flush(done))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=FLUSH_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("pump.flush_timeout", session_id=self.session_id)

    async def _commit_batch(self, batch: list[AgentOutput | ConnectionLost | _Flush]) -> None:
        """Commit the batch's durable events in one transaction, then publish everything in order.

        A token delta is published with the seq of the durable event before it, after that event's
        commit; so one commit serves a whole batch even when deltas and messages interleave.
        """
        durable = [item for item in batch if isinstance(item, AgentOutput) and not item.ephemeral]
        run_id = self.current_run_id
        records = iter(
            await self.event_log.append(
                self.session_id,
                [NewEvent(run_id, output.kind, output.payload) for output in durable],
                publish=False,
                fence=self._fence,
            )
        )
        for item in batch:
            if isinstance(item, _Flush):
                if not item.done.done():
                    item.done.set_result(None)
            elif isinstance(item, ConnectionLost):
                self._ended = True
                self._on_signal(item)
            elif item.ephemeral:
                await self.event_log.publish_ephemeral(
                    EventRecord(
                        session_id=self.session_id,
                        seq=self.last_seq,
                        run_id=run_id,
                        kind=item.kind.value,
                        payload=item.payload,
                        created_at=utcnow(),
                        ephemeral=True,
                    )
                )
            else:
                record = next(records)
                self.last_seq = record.seq
                await self.event_log.publish([record])
                if item.is_result:
                    self._on_signal(ResultSeen(item, record))

    def terminate(self) -> None:
        """Kill the CLI at once and write nothing more (its lease moved on); close() still reaps it."""
        self._ended = True
        self._fence_refused = True
        self.connection.terminate()
        # A writer held back (hold()) wakes to find it must write nothing.
        self._may_write.set()

    def abandon(self) -> None:
        """Stop writing now, without waiting for anything: the caller writes the run's outcome next, and
        nothing of the CLI's may follow it in the log. Its tasks are cancelled (a commit already sent
        holds the session row's lock, so it lands before that outcome or not at all), and the CLI is
        killed."""
        self.terminate()
        for task in self._tasks:
            task.cancel()

    async def close(self, *, interrupt_first: bool = True) -> None:
        """Stop the CLI, then let the writer commit everything the reader took in (it ends on the
        ConnectionLost the reader always puts last)."""
        await self.connection.close(interrupt_first=interrupt_first)
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), timeout=20)
        except (TimeoutError, asyncio.CancelledError):
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
