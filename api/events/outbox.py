"""Publishing off the commit path: one task per replica drains wake-ups to the bus, in order.

A Redis that accepts connections but never answers made every append wait for its publish to time out
(about one event a second). Here an append only queues its wake-ups; the drainer publishes them. When
the queue is full the oldest are dropped and counted: a subscriber that misses a wake-up catches up from
the log (its periodic poll, or the RESYNC that follows a Redis reconnect), so nothing durable is lost.

Wake-ups that queued up for one channel while a publish was under way leave as one bus message (a batch,
:func:`pack`), which the receiving replica's hub splits again (:func:`unpack`): in a burst that is one
Redis round trip and one listener wake-up per batch instead of per event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from api.events import metrics

log = structlog.get_logger(__name__)

DEFAULT_CAPACITY = 20_000
MAX_BATCH = 200
MAX_BATCH_CHARS = 512 * 1024
# Starts a batch: the messages joined by newlines. No JSON text starts with it, and the JSON this project
# publishes (orjson, compact) never holds a raw newline; a message that does is sent alone.
BATCH_MARK = "\x1e"


def pack(messages: list[str]) -> str:
    return messages[0] if len(messages) == 1 else BATCH_MARK + "\n".join(messages)


def unpack(message: str) -> list[str]:
    return message[1:].split("\n") if message.startswith(BATCH_MARK) else [message]


def _batchable(message: str) -> bool:
    return "\n" not in message and not message.startswith(BATCH_MARK)


class Outbox:
    def __init__(
        self, publish: Callable[[str, str], Awaitable[bool]], capacity: int = DEFAULT_CAPACITY
    ) -> None:
        self._publish = publish
        self._pending: deque[tuple[str, str]] = deque(maxlen=capacity)
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="bus-outbox")

    def put(self, channel: str, message: str) -> None:
        if len(self._pending) == self._pending.maxlen:
            metrics.OUTBOX_DROPPED.inc()
        self._pending.append((channel, message))
        self._idle.clear()
        self._ready.set()

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) until everything queued so far has been handed to the bus."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def stop(self, timeout: float = 2.0) -> None:
        if self._task is None:
            return
        await self.flush(timeout)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                channel, message = self._pending.popleft()
                batch = [message]
                if _batchable(message):
                    size = len(message)
                    pending = self._pending
                    while (
                        pending
                        and pending[0][0] == channel
                        and len(batch) < MAX_BATCH
                        and size < MAX_BATCH_CHARS
                        and _batchable(pending[0][1])
                    ):
                        batch.append(pending.popleft()[1])
                        size += len(batch[-1])
                try:
                    await self._publish(channel, pack(batch))
                except Exception:
                    # The bus reports transport failures itself; anything else must not end the drainer.
                    log.exception("bus.outbox_publish_failed", channel=channel)
            self._idle.set()
