"""The consumer side of the event bus: a bounded per-watcher queue that degrades to RESYNC."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

import structlog

from api.events import metrics

log = structlog.get_logger(__name__)


class Resync:
    """Marker type: messages may have been lost for this watcher; re-read the log from your cursor."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC: Final[Resync] = Resync()


class BusClosedError(RuntimeError):
    """Raised by :meth:`Watcher.next` once the bus was stopped: no more messages will come."""


class Watcher:
    """One consumer's view of a channel, created by ``EventBus.watch()``.

    The queue holds at most ``maxsize`` messages. A watcher that falls that far behind has its queue
    dropped and gets RESYNC next; until it has read that RESYNC, further messages are not queued either,
    because the log re-read that the RESYNC triggers covers them (they were committed before publish).
    So a stalled reader costs bounded memory and never slows the publisher or other watchers.
    """

    def __init__(self, channel: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("watcher queue size must be at least 1")
        self.channel: Final = channel
        self._maxsize = maxsize
        self._items: deque[str] = deque()
        self._resync_pending = False
        self.resync_at = 0.0  # event-loop time the last RESYNC was decided: a log read after it covers it
        self._closed = False
        self._wakeup = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    async def next(self, timeout: float | None = None) -> str | Resync | None:
        """The next message, RESYNC, or None if nothing came within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._resync_pending:
                self._resync_pending = False
                return RESYNC
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise BusClosedError(f"event bus stopped while watching {self.channel!r}")
            self._wakeup.clear()
            if deadline is None:
                await self._wakeup.wait()
                continue
            if deadline <= loop.time():
                return None
            # One timer per watcher, kept across calls, rather than a timeout armed and cancelled around
            # every wait (a burst wakes each watcher many times): it may wake us early, and we look again.
            if self._timer is None or self._timer.when() > deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(deadline, self._on_timer)
            await self._wakeup.wait()

    def _on_timer(self) -> None:
        self._timer = None
        self._wakeup.set()

    def pending(self) -> int:
        """Messages queued and not read yet (diagnostics and tests)."""
        return len(self._items)

    # -- called by the bus's fan-out hub; never blocks ----------------------------------------------------

    def _offer(self, message: str) -> bool:
        if self._resync_pending:
            return False
        if len(self._items) >= self._maxsize:
            self._items.clear()
            self._resync_pending = True
            self.resync_at = asyncio.get_running_loop().time()
            self._wakeup.set()
            metrics.WATCHER_OVERFLOWS.inc()
            metrics.RESYNCS.labels(reason="overflow").inc()
            log.info("bus.watcher_overflow", channel=self.channel, queue_size=self._maxsize)
            return False
        self._items.append(message)
        self._wakeup.set()
        return True

    def _force_resync(self) -> None:
        # Queued messages are covered by the log re-read that RESYNC triggers: free them now.
        self._items.clear()
        self._resync_pending = True
        self.resync_at = asyncio.get_running_loop().time()
        self._wakeup.set()
        metrics.RESYNCS.labels(reason="reconnect").inc()

    def _close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wakeup.set()
