"""The control channel: how the replicas of one deployment reach each other (commands, dispatch wake-ups).

Its name carries the deployment's id, which lives in the database the replicas share, so two deployments
on one Redis (two installs, two test runs) never hear each other (docs/architecture.md, decision 8).
Replicas before this name existed used one fixed channel, `control:runs`. While CONTROL_LEGACY_CHANNEL is
on, a replica also publishes a copy of each message there, marked with its own channel, and acts on the
unmarked messages it hears there: old and new replicas stay in touch through a rolling upgrade, and
no new replica acts on a marked copy (it hears its own deployment's on the named channel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from api.events import metrics
from api.events.bus import EventBus, Resync
from persistence.database import Database
from persistence.repositories.deployment import deployment_id

log = structlog.get_logger(__name__)

LEGACY = "control:runs"
# The key a legacy copy carries: the named channel of the replica that sent it.
MARK = "channel"

# Called with each message meant for this deployment, or None where messages may have been missed.
Handler = Callable[[dict[str, Any] | None], None]


class ControlChannel:
    def __init__(self, bus: EventBus, db: Database, *, legacy: bool) -> None:
        self.bus = bus
        self.db = db
        self.legacy = legacy
        self._name: str | None = None

    async def name(self) -> str:
        """`control:<deployment id>:runs`; read from the database once."""
        if self._name is None:
            async with self.db.session() as session:
                self._name = f"control:{await deployment_id(session)}:runs"
        return self._name

    async def publish(self, message: dict[str, Any]) -> None:
        """Best effort, like every control message: the receivers also poll the database."""
        name = await self._known_name()
        if name is not None:
            await self.bus.publish(name, orjson.dumps(message).decode())
        self._publish_legacy(message, name)

    async def publish_soon(self, message: dict[str, Any]) -> None:
        """publish() through the bus's outbox: a silent Redis holds up nobody."""
        name = await self._known_name()
        if name is not None:
            self.bus.publish_soon(name, orjson.dumps(message).decode())
        self._publish_legacy(message, name)

    async def listen(self, handle: Handler, ready: asyncio.Event) -> None:
        """Call `handle` for every message to this deployment until cancelled; `ready` is set once the
        named channel is watched (or watching it failed: the database poll covers the gap)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen(handle, ready, legacy=False))
            if self.legacy:
                group.create_task(self._listen(handle, asyncio.Event(), legacy=True))

    async def _known_name(self) -> str | None:
        try:
            return await self.name()
        except Exception as exc:
            # Only while the database is out since this replica started; the receivers poll.
            log.warning("control.channel_unknown", error=repr(exc))
            return None

    def _publish_legacy(self, message: dict[str, Any], name: str | None) -> None:
        if not self.legacy:
            return
        # Unmarked only when this replica can't tell its deployment: every replica on the Redis acts on
        # it then, as all did before the channel had a name.
        copy = message if name is None else {**message, MARK: name}
        self.bus.publish_soon(LEGACY, orjson.dumps(copy).decode())

    async def _listen(self, handle: Handler, ready: asyncio.Event, *, legacy: bool) -> None:
        while True:
            try:
                channel = LEGACY if legacy else await self.name()
                async with self.bus.watch(channel) as watcher:
                    ready.set()
                    while True:
                        item = await watcher.next(timeout=None)
                        if item is None or isinstance(item, Resync):
                            handle(None)
                            continue
                        try:
                            message = orjson.loads(item)
                        except orjson.JSONDecodeError:
                            log.warning("control.bad_message", channel=channel)
                            continue
                        if not isinstance(message, dict) or (legacy and MARK in message):
                            continue
                        if legacy:
                            metrics.LEGACY_CONTROL_MESSAGES.inc()
                        handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("control.watch_failed", legacy=legacy, exc_info=True)
                ready.set()
                await asyncio.sleep(1.0)
