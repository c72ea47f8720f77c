"""Open WebSockets stay authorized: a revoked key's sockets close with 4403 within seconds.

A socket authenticates once, at ``connection_init``, and may stay open for hours. So each replica checks
the keys behind its open sockets every ``ws_auth_recheck_seconds`` with one query (the distinct key ids,
not one query per socket) and closes the sockets of keys that were revoked or deleted. Revocation is
done by the operator's CLI, a process without the bus, so polling is what reaches every replica; a
database outage skips a round and never closes a socket by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

import structlog

from persistence.database import Database, is_unavailable
from persistence.repositories.tenants import ApiKeyRepository

if TYPE_CHECKING:
    from api.auth import Authenticator

log = structlog.get_logger(__name__)

REVOKED_CLOSE_CODE = 4403
_QUERY_CHUNK = 500


class WatchedSocket(Protocol):
    @property
    def api_key_id(self) -> str | None:
        """The key the socket authenticated with; None until connection_init succeeded."""

    async def close_revoked(self) -> None:
        """Stop the socket's operations and close it with 4403."""


class KeyWatch:
    """The open sockets of this replica, and the task that re-checks their keys."""

    def __init__(self, db: Database, *, interval: float, authenticator: Authenticator | None = None) -> None:
        self.db = db
        self.interval = interval
        # Told what each round found, so requests made with these keys need no lookup of their own.
        self.authenticator = authenticator
        self._sockets: set[WatchedSocket] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, socket: WatchedSocket) -> None:
        self._sockets.add(socket)

    def discard(self, socket: WatchedSocket) -> None:
        self._sockets.discard(socket)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> int:
        """One round: close the sockets whose key is no longer valid; returns how many were closed."""
        by_key: dict[str, list[WatchedSocket]] = defaultdict(list)
        for socket in list(self._sockets):
            if socket.api_key_id is not None:
                by_key[socket.api_key_id].append(socket)
        if not by_key:
            return 0
        key_ids = list(by_key)
        valid: set[str] = set()
        # Before the query is sent: what it finds holds from then on, no earlier.
        since = self.authenticator.clock() if self.authenticator is not None else 0.0
        async with self.db.session() as session:
            repo = ApiKeyRepository(session)
            for start in range(0, len(key_ids), _QUERY_CHUNK):
                valid |= await repo.valid_ids(key_ids[start : start + _QUERY_CHUNK])
        if self.authenticator is not None:
            self.authenticator.confirmed(set(key_ids), valid, since)
        closing = [(key, socket) for key, sockets in by_key.items() if key not in valid for socket in sockets]
        for key_id, socket in closing:
            self._sockets.discard(socket)
            log.info("auth.socket_closed_revoked_key", api_key_id=key_id)
        results = await asyncio.gather(
            *(socket.close_revoked() for _, socket in closing), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.info("auth.socket_close_failed", error=repr(result))
        return len(closing)

    async def _run(self) -> None:
        unavailable = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("auth.recheck_failed")
                elif not unavailable:
                    log.warning("auth.recheck_skipped_database_unavailable", error=repr(exc)[:300])
                unavailable = is_unavailable(exc)
            else:
                unavailable = False
