"""Cross-replica fan-out of "something happened" messages, on broadcaster 0.3.1.

The database event log is the truth; this bus only wakes subscribers up (docs/architecture.md, decisions
1-2). It is at-most-once, but never silently lossy: whenever a watcher may have missed something (its queue
overflowed, the Redis connection was lost and re-established, a SUBSCRIBE was not confirmed) it gets
RESYNC, and its owner re-reads the log.

Per replica there is one broadcaster subscription per channel, opened under a per-channel lock for the
first watcher and closed after the last one leaves (broadcaster's own ``subscribe()`` loses a subscriber
when two open the same channel at once, defect B). A pump task per channel fans events out to bounded
per-watcher queues (broadcaster's queues are unbounded, defect D).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from broadcaster import Broadcast
from broadcaster._base import Subscriber, Unsubscribed

from api.events import metrics
from api.events.bus_watcher import RESYNC, BusClosedError, Resync, Watcher
from api.events.outbox import Outbox, unpack
from api.events.redis_backend import TRANSPORT_ERRORS, RedisPubSubBackend, ResyncEvent

__all__ = ["RESYNC", "BusClosedError", "EventBus", "Resync", "Watcher"]

log = structlog.get_logger(__name__)

# Copies of locally delivered messages a channel waits for at most (EventBus.publish_soon).
MAX_ECHOES = 10_000


@dataclass(eq=False)
class _Channel:
    """One channel's local state on this replica."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # watch() calls holding this state, including those still entering
    watchers: set[Watcher] = field(default_factory=set)
    subscription: contextlib.AsyncExitStack | None = None
    pump: asyncio.Task[None] | None = None
    # Messages this replica delivered to its watchers itself and also sent through Redis: their
    # copies coming back from Redis are dropped (publish_soon(local_first=True)).
    echoes: Counter[str] = field(default_factory=Counter)


class EventBus:
    """Cross-replica fan-out: one broadcaster subscription per channel per replica, a local hub fanning
    out to bounded per-watcher queues.

    ``redis_url=None``: one process (embedded mode), whose watchers get what is published at once; the
    broadcaster's ``memory://`` backend then only keeps the subscriptions' bookkeeping alike.
    """

    def __init__(
        self,
        redis_url: str | None,
        *,
        watcher_queue_size: int = 1000,
        subscribe_timeout: float = 2.0,
        publish_timeout: float = 1.0,
        ping_interval: float = 1.0,
        backoff_max: float = 1.0,
    ) -> None:
        if watcher_queue_size < 1:
            raise ValueError("watcher_queue_size must be at least 1")
        self._queue_size = watcher_queue_size
        self._backend: RedisPubSubBackend | None = None
        if redis_url is None:
            self._broadcast = Broadcast("memory://")
        else:
            self._backend = RedisPubSubBackend(
                redis_url,
                subscribe_timeout=subscribe_timeout,
                publish_timeout=publish_timeout,
                ping_interval=ping_interval,
                backoff_max=backoff_max,
            )
            self._broadcast = Broadcast(backend=self._backend)
        self._channels: dict[str, _Channel] = {}
        # Opening and closing run as tasks of their own: a watcher cancelled half-way must not leave
        # broadcaster's bookkeeping half-done (its subscribe() masks errors with a KeyError, defect F).
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._outbox = Outbox(self.publish)

    async def start(self) -> None:
        if self._running:
            return
        await self._broadcast.connect()
        self._running = True
        self._outbox.start()

    async def stop(self) -> None:
        if not self._running:
            return
        await self._outbox.stop()
        self._running = False
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        for state in list(self._channels.values()):
            for watcher in state.watchers:
                watcher._close()
            async with state.lock:
                await self._close_subscription(state)
        self._channels.clear()
        await self._broadcast.disconnect()
        # Broadcast.disconnect() cancels its listener task without awaiting it.
        listener: asyncio.Task[None] | None = getattr(self._broadcast, "_listener_task", None)
        if listener is not None:
            await asyncio.wait([listener])

    async def publish(self, channel: str, message: str) -> bool:
        """Best effort: False (logged, counted) if the transport failed; never raises for that."""
        if not self._running:
            raise RuntimeError("EventBus.publish() before start() or after stop()")
        if self._backend is None:
            self._deliver_here(channel, message)
            return True
        try:
            await self._broadcast.publish(channel, message)
        except TRANSPORT_ERRORS as exc:
            metrics.PUBLISH_FAILURES.inc()
            log.warning("bus.publish_failed", channel=channel, error=repr(exc))
            return False
        metrics.MESSAGES_PUBLISHED.inc()
        return True

    def publish_soon(self, channel: str, message: str, *, local_first: bool = False) -> None:
        """Queue a wake-up for the replica's outbox (api/events/outbox.py): never waits for the bus.

        `local_first`: this replica's own watchers get it at once, and the other replicas' through the
        bus. Only for messages no other replica publishes byte for byte alike (a session's events: each
        names its seq), since the copy that comes back is recognised by its text and dropped."""
        if not self._running:
            raise RuntimeError("EventBus.publish_soon() before start() or after stop()")
        if self._backend is None:
            self._deliver_here(channel, message)
            return
        if local_first:
            state = self._channels.get(channel)
            if state is not None and state.watchers:
                if len(state.echoes) >= MAX_ECHOES:
                    # Copies that never came back (a failed publish, an outbox overflow): forget them.
                    state.echoes.clear()
                state.echoes[message] += 1
                self._deliver_here(channel, message)
        self._outbox.put(channel, message)

    def _deliver_here(self, channel: str, message: str) -> None:
        """One process (memory://): every watcher is here, so a message goes straight into their queues,
        in the order of the calls, without the outbox's and the broadcaster's task hops (each one a
        turn of a busy event loop between a commit and its subscribers)."""
        if self._backend is None:
            metrics.MESSAGES_PUBLISHED.inc()
        state = self._channels.get(channel)
        if state is not None:
            metrics.MESSAGES_DELIVERED.inc(sum(watcher._offer(message) for watcher in state.watchers))

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until the wake-ups queued so far have been published."""
        await self._outbox.flush(timeout)

    def watch(self, channel: str) -> contextlib.AbstractAsyncContextManager[Watcher]:
        """Once entered, every later message on ``channel`` (from any replica) reaches the watcher, or the
        watcher gets RESYNC."""
        return self._watch(channel)

    async def is_healthy(self) -> bool:
        """For /readyz: Redis reachable and the listener subscribed (memory: running)."""
        if not self._running:
            return False
        if self._backend is None:
            return True
        return self._backend.listening and await self._backend.ping()

    # -- internals ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _watch(self, channel: str) -> AsyncIterator[Watcher]:
        if not self._running:
            raise RuntimeError("EventBus.watch() before start() or after stop()")
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        state.users += 1
        watcher = Watcher(channel, self._queue_size)
        # Registered before the subscription is confirmed, so an in-band RESYNC can't miss it.
        state.watchers.add(watcher)
        metrics.LIVE_WATCHERS.inc()
        try:
            await self._in_task(self._open(channel, state))
            yield watcher
        finally:
            metrics.LIVE_WATCHERS.dec()
            state.watchers.discard(watcher)
            watcher._close()
            state.users -= 1
            if state.users == 0 and self._running:
                await self._in_task(self._release(channel, state))

    async def _in_task(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def _open(self, channel: str, state: _Channel) -> None:
        async with state.lock:
            if state.subscription is not None or not self._running:
                return
            stack = contextlib.AsyncExitStack()
            subscriber: Subscriber = await stack.enter_async_context(self._broadcast.subscribe(channel))
            state.subscription = stack
            # Shared by every watcher of the channel: not under the request id of the first one.
            state.pump = asyncio.create_task(
                self._pump(state, subscriber), name=f"bus-pump:{channel}", context=contextvars.Context()
            )

    async def _release(self, channel: str, state: _Channel) -> None:
        async with state.lock:
            if state.users == 0:
                await self._close_subscription(state)
            # Someone may have arrived while we were closing: they reopen with this same state.
            if state.users == 0 and self._channels.get(channel) is state:
                del self._channels[channel]

    async def _close_subscription(self, state: _Channel) -> None:
        stack, pump = state.subscription, state.pump
        state.subscription = state.pump = None
        try:
            if stack is not None:
                await stack.aclose()  # broadcaster unsubscribes the backend (ours never raises for that)
        finally:
            if pump is not None:
                pump.cancel()  # its watchers are gone; any event still queued for it is moot
                await asyncio.wait([pump])

    async def _pump(self, state: _Channel, subscriber: Subscriber) -> None:
        while True:
            try:
                event = await subscriber.get()
            except Unsubscribed:
                return
            watchers = list(state.watchers)
            if isinstance(event, ResyncEvent):
                # Whatever was in flight may be lost: the watchers re-read the log instead.
                state.echoes.clear()
                for watcher in watchers:
                    watcher._force_resync()
                if watchers:
                    log.info("bus.resync", channel=event.channel, watchers=len(watchers))
                continue
            delivered = 0
            echoes = state.echoes
            for message in unpack(event.message):
                if echoes and echoes.get(message):
                    # Delivered here already, as it was published.
                    echoes[message] -= 1
                    if not echoes[message]:
                        del echoes[message]
                    continue
                delivered += sum(watcher._offer(message) for watcher in watchers)
            metrics.MESSAGES_DELIVERED.inc(delivered)
