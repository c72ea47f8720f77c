"""This replica's session leases: taking, renewing and giving them up, and reaping other replicas' runs.

A session's CLI runs on the replica holding its lease (docs/architecture.md, decision 4). Lease times are
the database's (persistence/repositories/leases.py). Each claim hands out a fencing token that the
holder's writes carry, so a replica that lost the lease cannot write the session's log or its run's
status. A replica that cannot renew (the database is unreachable) cannot know whether another replica
took over once the lease lapses: it stops its CLIs before that moment, by its own monotonic clock, and
writes nothing; the reaper of whichever replica notices settles the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog

from api.events.log import EventLog
from api.runtime import lifecycle, permissions
from api.settings import Settings
from persistence.database import Database
from persistence.repositories.leases import Fence, LeaseRepository
from persistence.repositories.runs import RunRepository

log = structlog.get_logger(__name__)

# Stopping a CLI (SIGTERM to the process, then its pump's last commit) takes well under this; a holder
# that cannot renew begins stopping this long before its lease could lapse in the database.
STOP_MARGIN_SECONDS = 1.5


def orphan_error(replica: str | None) -> str:
    """What a run reads when its replica stopped holding the session's lease mid-run."""
    return (
        f"replica {replica} stopped responding during the run (it lost the session's lease: it died, or "
        "could not reach the database)"
    )


class LeaseKeeper:
    """The leases this replica holds, with their tokens, kept alive while their sessions' actors live.

    `on_lost(session_id, reason)` is called when a lease is gone (another replica or a reaper took it)
    or about to lapse unrenewed: the session's CLI must stop at once, and nothing more be written."""

    def __init__(self, settings: Settings, db: Database, *, on_lost: Callable[[str, str], None]) -> None:
        self.settings = settings
        self.db = db
        self.replica = settings.replica_id
        self._on_lost = on_lost
        self._tokens: dict[str, int] = {}
        # By this replica's monotonic clock: when each lease may lapse at the earliest. The database
        # set its expiry after the request was sent, so timing from the send errs on the safe side.
        self._valid_until: dict[str, float] = {}

    @property
    def ttl(self) -> float:
        return self.settings.lease_seconds

    def held(self) -> Mapping[str, int]:
        """Session id → the token this replica holds it under."""
        return dict(self._tokens)

    def token(self, session_id: str) -> int | None:
        return self._tokens.get(session_id)

    def fence(self, token: int) -> Fence:
        return Fence(self.replica, token)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def note_claimed(self, session_id: str, token: int, sent_at: float) -> None:
        """A claim sent at `sent_at` (this replica's monotonic clock) succeeded with `token`."""
        self._tokens[session_id] = token
        self._valid_until[session_id] = sent_at + self.ttl

    async def claim(self, session_id: str) -> int | None:
        """Take the session's lease in a transaction of its own; its token, or None when another replica
        holds it."""
        sent = self.now()
        async with self.db.session() as session:
            token = await LeaseRepository(session).claim(session_id, self.replica, ttl_seconds=self.ttl)
            await session.commit()
        if token is not None:
            self.note_claimed(session_id, token, sent)
        return token

    async def release(self, session_id: str, token: int) -> None:
        """Give up the lease taken with `token` (a newer claim of this replica's is kept)."""
        if self._tokens.get(session_id) != token:
            return
        del self._tokens[session_id]
        self._valid_until.pop(session_id, None)
        try:
            async with self.db.session() as session:
                await LeaseRepository(session).release(session_id, self.fence(token))
                await session.commit()
        except Exception:
            # An unreleased lease simply lapses.
            log.warning("lease.release_failed", session_id=session_id, exc_info=True)

    def _lose(self, session_id: str, reason: str) -> None:
        self._tokens.pop(session_id, None)
        self._valid_until.pop(session_id, None)
        self._on_lost(session_id, reason)

    async def renew_once(self) -> bool:
        """One renewal of every held lease; False when the database could not be reached in time."""
        held = self.held()
        if not held:
            return True
        sent = self.now()
        # A database that hangs rather than refuses must not hold this past the moment to stop the CLIs.
        timeout = min(self.settings.lease_renew_seconds, max(0.05, self._time_to_stop()))
        try:
            async with asyncio.timeout(timeout):
                async with self.db.session() as session:
                    renewed = await LeaseRepository(session).renew(self.replica, held, ttl_seconds=self.ttl)
                    await session.commit()
        except Exception:
            log.warning("lease.renew_failed", exc_info=True)
            return False
        for session_id, token in held.items():
            if self._tokens.get(session_id) != token:
                continue  # released or claimed again meanwhile
            if session_id in renewed:
                self._valid_until[session_id] = sent + self.ttl
            else:
                # Another replica or a reaper took it: two CLIs must never run one session.
                log.error("lease.lost", session_id=session_id)
                self._lose(session_id, f"replica {self.replica} lost the session's lease during the run")
        return True

    def stop_unrenewed(self) -> None:
        """Give up, before they can lapse, the leases no renewal has reached in time."""
        now = self.now()
        for session_id, until in list(self._valid_until.items()):
            if now >= until - STOP_MARGIN_SECONDS:
                log.error("lease.unrenewable", session_id=session_id)
                self._lose(
                    session_id,
                    f"replica {self.replica} could not renew the session's lease (the database did not "
                    "answer), so it stopped the agent",
                )

    def _time_to_stop(self) -> float:
        """Seconds until the first held lease must be given up unless renewed (inf when none is held)."""
        if not self._valid_until:
            return float("inf")
        return min(self._valid_until.values()) - STOP_MARGIN_SECONDS - self.now()

    def _next_wait(self, renewed: bool) -> float:
        wait = self.settings.lease_renew_seconds if renewed else self.settings.lease_renew_seconds / 4
        return min(wait, max(0.05, self._time_to_stop()))

    async def run(self) -> None:
        renewed = True
        while True:
            await asyncio.sleep(self._next_wait(renewed))
            self.stop_unrenewed()
            renewed = await self.renew_once()
            self.stop_unrenewed()


class OrphanReaper:
    """Marks FAILED the RUNNING runs whose replica no longer holds their session's lease, fencing that
    replica off first, so that whatever it still sends is refused."""

    def __init__(
        self,
        settings: Settings,
        event_log: EventLog,
        *,
        is_local: Callable[[str], bool],
        on_reaped: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.event_log = event_log
        self._is_local = is_local
        self._on_reaped = on_reaped

    async def reap_once(self) -> int:
        """Settle the orphans there are now; returns how many this replica settled."""
        async with self.event_log.db.session() as session:
            orphans = await RunRepository(session).orphaned()
        reaped = 0
        for run in orphans:
            if self._is_local(run.session_id):
                # This replica's own actor is stopping it and knows better.
                continue
            error = orphan_error(run.replica)
            transition = await lifecycle.finish(
                self.event_log, run.id, status="FAILED", error=error, orphan=True
            )
            if transition is None:
                continue
            reaped += 1
            log.warning("run.orphan_failed", run_id=run.id, replica=run.replica)
            await permissions.cancel_pending(
                self.event_log, run.id, "the replica running the session stopped responding"
            )
            await lifecycle.announce(self.event_log, transition)
        if reaped:
            self._on_reaped()
        return reaped

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.orphan_poll_seconds)
            try:
                await self.reap_once()
            except Exception:
                # A database hiccup must not end reaping; the next beat tries again.
                log.warning("orphans.reap_failed", exc_info=True)
