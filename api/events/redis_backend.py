"""A broadcaster backend for Redis pub/sub that confirms subscriptions and survives Redis restarts.

broadcaster 0.3.1's own ``RedisBackend`` sets its ``_ready`` flag before SUBSCRIBE is registered, so with
redis-py 8 the listener parks and the first subscription hears nothing (defect A), and its listener task
dies for good on the first connection error (defect C). This backend owns one dedicated RESP2 connection
and reads it continuously, whatever the number of subscribed channels:

* ``subscribe()`` returns once the server acknowledged the SUBSCRIBE, so "live first" holds;
* a supervisor task reconnects with capped exponential backoff, re-subscribes every wanted channel, and
  only then emits a :class:`ResyncEvent` per channel, in band, because messages published while we were
  away are gone (Redis pub/sub is at-most-once);
* silence is probed with PING, so a half-open socket is noticed too.

Redis pub/sub only: nothing is ever stored in the keyspace (broadcaster's stream backend grows without
bound, defect E).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import deque
from typing import Any

import structlog
from broadcaster import BroadcastBackend, Event
from redis import asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from api.events import metrics

log = structlog.get_logger(__name__)

# What a broken or unreachable Redis raises through redis-py and asyncio.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class ResyncEvent(Event):
    """In-band marker: subscribers of ``channel`` may have missed messages and must re-read the log.

    It travels through broadcaster's queues like any event, so it can never overtake the re-subscription
    it reports, and broadcaster only routes it to a channel it has registered.
    """

    def __init__(self, channel: str) -> None:
        super().__init__(channel=channel, message="")


class RedisPubSubBackend(BroadcastBackend):
    """Redis pub/sub backend for ``broadcaster.Broadcast(backend=...)`` with confirmed SUBSCRIBE,
    reconnection and in-band resync markers."""

    def __init__(
        self,
        url: str,
        *,
        subscribe_timeout: float = 2.0,
        publish_timeout: float = 1.0,
        ping_interval: float = 1.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
    ) -> None:
        # BroadcastBackend.__init__ only raises NotImplementedError: deliberately not called.
        self._subscribe_timeout = subscribe_timeout
        self._publish_timeout = publish_timeout
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        # One retry without delay: the first command after a Redis restart meets a stale pooled socket.
        self._client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=publish_timeout,
            socket_timeout=publish_timeout,
            retry=Retry(NoBackoff(), 1),
        )
        # redis-py's PubSub reconnects and re-subscribes behind our back, so we would never learn that
        # messages were lost: the listener uses a bare RESP2 connection that never retries on its own.
        listener_kwargs: dict[str, Any] = dict(parse_url(url))
        self._connection_class: type[AbstractConnection] = listener_kwargs.pop("connection_class", Connection)
        listener_kwargs.update(
            protocol=2,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            socket_timeout=subscribe_timeout,
            socket_connect_timeout=subscribe_timeout,
        )
        self._listener_kwargs = listener_kwargs
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._wanted: set[str] = set()  # should be subscribed on the server
        self._registered: set[str] = set()  # subscribe() returned, so broadcaster routes events there
        self._acks: dict[str, deque[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._live = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- broadcaster's BroadcastBackend interface --------------------------------------------------------

    async def connect(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="bus-redis-listener")
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                await self._live.wait()
        except TimeoutError:
            # Not fatal: the supervisor keeps trying and /readyz reports the outage meanwhile.
            log.warning("bus.redis_unavailable_at_start")

    async def disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        await self._client.aclose()

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait for the server's confirmation; never raises for a transport fault.

        If the confirmation doesn't come in time, a ResyncEvent is queued for the channel, so that the
        caller's subscribers re-read the log; the supervisor subscribes it once Redis is back.
        """
        self._wanted.add(channel)
        confirmed = False
        try:
            # While Redis is away we don't wait for it: the caller's log replay shouldn't stall, and the
            # supervisor subscribes the channel (and resyncs it) as soon as Redis is back.
            ack = await self._send("SUBSCRIBE", channel, ack_channel=channel)
            async with asyncio.timeout(self._subscribe_timeout):
                await ack
            confirmed = True
        except TRANSPORT_ERRORS as exc:
            log.warning("bus.subscribe_unconfirmed", channel=channel, **_error(exc))
        # No await between here and broadcaster registering the channel (it does so right after we
        # return), so an event queued from now on is routed to it.
        self._registered.add(channel)
        if not confirmed:
            self._events.put_nowait(ResyncEvent(channel))

    async def unsubscribe(self, channel: str) -> None:
        """Best effort: if Redis is away, the next connection simply doesn't subscribe the channel."""
        self._wanted.discard(channel)
        self._registered.discard(channel)
        if not self._live.is_set():
            return
        try:
            await self._send("UNSUBSCRIBE", channel)
        except TRANSPORT_ERRORS as exc:
            log.info("bus.unsubscribe_failed", channel=channel, **_error(exc))

    async def publish(self, channel: str, message: Any) -> None:
        async with asyncio.timeout(self._publish_timeout):
            await self._client.publish(channel, message)

    async def next_published(self) -> Event:
        return await self._events.get()

    # -- health -------------------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """True while the listener connection is up and every wanted channel was re-subscribed."""
        return self._live.is_set() and self._task is not None and not self._task.done()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._client.ping()
        except TRANSPORT_ERRORS:
            return False
        return True

    # -- the listener -------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self._backoff_initial
        ever_live = False
        while True:
            conn: AbstractConnection | None = None
            try:
                conn = self._connection_class(**self._listener_kwargs)
                await conn.connect()  # type: ignore[no-untyped-call]
                self._conn = conn
                await self._resubscribe(conn)
                if ever_live:
                    metrics.RECONNECTS.inc()
                    log.info("bus.redis_reconnected", channels=len(self._wanted))
                ever_live = True
                delay = self._backoff_initial
                await self._read_forever(conn)
            except TRANSPORT_ERRORS as exc:
                if self._live.is_set():
                    log.warning("bus.redis_disconnected", **_error(exc))
                else:
                    log.debug("bus.redis_connect_failed", **_error(exc))
            except Exception:
                # A bug here must not leave the replica deaf for good (broadcaster's defect C): retry.
                log.exception("bus.redis_listener_failed")
            finally:
                self._lose(conn)
                if conn is not None:
                    await conn.disconnect(nowait=True)
            # Jitter keeps many replicas from reconnecting in lockstep after a Redis restart.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._backoff_max)

    async def _resubscribe(self, conn: AbstractConnection) -> None:
        channels = sorted(self._wanted)
        if channels:
            async with self._write_lock:
                acks = [self._expect_ack(channel) for channel in channels]
                await conn.send_command("SUBSCRIBE", *channels, check_health=False)
            async with asyncio.timeout(self._subscribe_timeout):
                while not all(ack.done() for ack in acks):
                    self._dispatch(await conn.read_response(timeout=math.inf, disconnect_on_error=False))
        # unsubscribe() skips the server while we are not live: drop what was let go meanwhile.
        stale = [channel for channel in channels if channel not in self._wanted]
        if stale:
            async with self._write_lock:
                await conn.send_command("UNSUBSCRIBE", *stale, check_health=False)
        self._live.set()
        metrics.REDIS_LISTENER_UP.set(1)
        for channel in sorted(self._registered):
            self._events.put_nowait(ResyncEvent(channel))

    async def _read_forever(self, conn: AbstractConnection) -> None:
        ping_outstanding = False
        while True:
            reply = await conn.read_response(timeout=self._ping_interval, disconnect_on_error=False)
            if reply is None:  # silence for a whole interval: is the socket still alive?
                if ping_outstanding:
                    raise RedisConnectionError("no reply to PING from Redis")
                await self._send("PING")
                ping_outstanding = True
                continue
            ping_outstanding = False
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return  # +PONG while no channel is subscribed
        kind = _text(reply[0])
        if kind == "message" and len(reply) == 3:
            self._events.put_nowait(Event(channel=_text(reply[1]), message=_text(reply[2])))
        elif kind == "subscribe":
            pending = self._acks.get(_text(reply[1]))
            if pending:
                # Replies come in command order, so the oldest waiter owns this one (even if it gave up).
                ack = pending.popleft()
                if not ack.done():
                    ack.set_result(None)
                if not pending:
                    del self._acks[_text(reply[1])]

    def _expect_ack(self, channel: str) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.setdefault(channel, deque()).append(ack)
        return ack

    async def _send(self, *args: str, ack_channel: str | None = None) -> asyncio.Future[None]:
        """Write one command on the live listener connection; returns the future of its SUBSCRIBE ack."""
        async with self._write_lock:
            # Checked under the lock with no await before the write: redis-py would otherwise silently
            # reconnect a connection the supervisor has just given up on.
            conn = self._conn
            if not self._live.is_set() or conn is None or not conn.is_connected:
                raise RedisConnectionError("Redis listener connection is down")
            ack = self._expect_ack(ack_channel) if ack_channel else asyncio.get_running_loop().create_future()
            await conn.send_command(*args, check_health=False)
            return ack

    def _lose(self, conn: AbstractConnection | None) -> None:
        """Forget a dead connection; synchronous so no sender slips in between."""
        if self._conn is conn:
            self._conn = None
        self._live.clear()
        metrics.REDIS_LISTENER_UP.set(0)
        for pending in self._acks.values():
            for ack in pending:
                if not ack.done():
                    ack.set_exception(RedisConnectionError("Redis connection lost before SUBSCRIBE ack"))
                    # The waiter may have timed out already; don't let asyncio log the exception.
                    with contextlib.suppress(BaseException):
                        ack.exception()
        self._acks.clear()


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": str(exc) or repr(exc), "error_type": type(exc).__name__}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        # A foreign publisher must not be able to kill the listener with bad UTF-8.
        return value.decode("utf-8", errors="replace")
    return str(value)
