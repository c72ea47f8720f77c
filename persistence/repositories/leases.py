"""Session leases in the database's clock, with a fencing token (docs/architecture.md, decision 4).

A lease says which replica runs a session's CLI. Its times are the database's (PostgreSQL's
clock_timestamp(), SQLite's own 'now'), never a replica's, so replicas whose clocks disagree still agree
on when a lease lapses. Its `lease_token` is a generation number, raised whenever a new holder takes the
lease and whenever a reaper fences off a lapsed one; the holder's writes carry the token it took and are
refused once the row holds another one (`Fence`, `StaleLease`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import AgentSession, UTCDateTime


@dataclass(frozen=True)
class Fence:
    """What a holder's write must match in the session row: its replica id and the token it took."""

    owner: str
    token: int

    def matches(self) -> sa.ColumnElement[bool]:
        return sa.and_(AgentSession.lease_owner == self.owner, AgentSession.lease_token == self.token)


class StaleLease(Exception):
    """A write carried a fencing token the session's lease no longer has: another replica (or a reaper)
    took the session over, so this holder must stop and write nothing more."""

    def __init__(self, session_id: str, fence: Fence) -> None:
        super().__init__(f"session {session_id}: lease token {fence.token} of {fence.owner} is stale")
        self.session_id = session_id
        self.fence = fence


def db_now(dialect: str) -> sa.ColumnElement[Any]:
    """The database's current time, comparable with the stored lease times."""
    if dialect == "postgresql":
        # Not now(): that is the transaction's start, which a long transaction would hold back.
        return sa.func.clock_timestamp(type_=UTCDateTime())
    # SQLite stores datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text; %f gives milliseconds only.
    return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now").op("||")("000")


def db_later(dialect: str, seconds: float) -> sa.ColumnElement[Any]:
    """The database's current time plus `seconds`."""
    return _later(dialect, sa.literal(_offset(dialect, seconds), _offset_type(dialect)))


def _later(dialect: str, offset: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The database's current time plus `offset`, a value of _offset's (a literal or a parameter)."""
    if dialect == "postgresql":
        return sa.func.clock_timestamp(type_=UTCDateTime()) + offset
    return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", offset).op("||")("000")


def _offset(dialect: str, seconds: float) -> object:
    """`seconds` as the database adds them to a time: an interval, or SQLite's modifier text."""
    return timedelta(seconds=seconds) if dialect == "postgresql" else f"{seconds:+.3f} seconds"


def _offset_type(dialect: str) -> sa.types.TypeEngine[Any]:
    return sa.Interval() if dialect == "postgresql" else sa.String()


class RunClaim(NamedTuple):
    """The lease claimed for a run begun at once (LeaseRepository.claim_to_run)."""

    token: int
    # The last of the seqs taken for the run's events.
    last_seq: int
    # The session's row as the claim left it: RUNNING, with the lease and seqs taken.
    session: AgentSession


def _lapsed_at(dialect: str) -> sa.ColumnElement[bool]:
    return sa.or_(AgentSession.lease_expires_at.is_(None), AgentSession.lease_expires_at < db_now(dialect))


@functools.cache
def _claim_statements(dialect: str) -> tuple[sa.Update, sa.Update]:
    """The UPDATEs that take the lease for `owner` (keeping the token of a live lease of ours): claim's,
    answering the token, and claim_to_run's, which also marks the session RUNNING and takes seqs. Built
    once per dialect with their values as parameters: building them took a millisecond of CPU on every
    run's start, beside the CLI the run had just sent its prompt to."""
    owner = sa.bindparam("owner", type_=sa.String())
    later = _later(dialect, sa.bindparam("ttl", type_=_offset_type(dialect)))
    lapsed = _lapsed_at(dialect)
    ours_and_live = sa.and_(AgentSession.lease_owner == owner, sa.not_(lapsed))
    claiming = (
        sa.update(AgentSession)
        .where(
            AgentSession.id == sa.bindparam("session_id"),
            sa.or_(AgentSession.lease_owner.is_(None), AgentSession.lease_owner == owner, lapsed),
        )
        .values(
            lease_owner=owner,
            lease_expires_at=later,
            lease_token=sa.case(
                (ours_and_live, AgentSession.lease_token), else_=AgentSession.lease_token + 1
            ),
        )
        .execution_options(synchronize_session=False)
    )
    to_run = (
        claiming.values(
            status="RUNNING",
            updated_at=sa.bindparam("at", type_=UTCDateTime()),
            last_seq=AgentSession.last_seq + sa.bindparam("seqs", type_=sa.Integer()),
        )
        .returning(AgentSession)
        # The caller's unit of work has the row loaded already: without this it would answer that
        # object as it was, the token and seqs before the claim.
        .execution_options(populate_existing=True)
    )
    return claiming.returning(AgentSession.lease_token), to_run


def _claim_values(dialect: str, session_id: str, owner: str, ttl_seconds: float) -> dict[str, Any]:
    return {"session_id": session_id, "owner": owner, "ttl": _offset(dialect, ttl_seconds)}


class LeaseRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect.name

    def _lapsed(self) -> sa.ColumnElement[bool]:
        return _lapsed_at(self.dialect)

    def claimable_by(self, owner: str) -> sa.ColumnElement[bool]:
        """The session's lease is free, lapsed or already `owner`'s (a WHERE clause on sessions)."""
        return sa.or_(AgentSession.lease_owner.is_(None), AgentSession.lease_owner == owner, self._lapsed())

    def lapsed(self) -> sa.ColumnElement[bool]:
        """The session's lease is free or has expired, in the database's clock."""
        return self._lapsed()

    async def claim(self, session_id: str, owner: str, *, ttl_seconds: float) -> int | None:
        """Take the lease (free, lapsed, or already ours) for `ttl_seconds`; returns its token, None when
        another replica holds it. A new holder, or a lapsed lease, starts a new generation; a live lease
        of ours keeps its token (an idle CLI of this replica goes on serving the session)."""
        claim, _ = _claim_statements(self.dialect)
        result = await self.session.execute(
            claim, _claim_values(self.dialect, session_id, owner, ttl_seconds)
        )
        token = result.scalar_one_or_none()
        return int(token) if token is not None else None

    async def claim_to_run(
        self, session_id: str, owner: str, *, ttl_seconds: float, at: datetime, seqs: int
    ) -> RunClaim | None:
        """claim(), and in the same statement the session marked RUNNING with `seqs` event seqs taken
        for the caller (who adds the events: EventRepository.insert_numbered), or None (nothing changed)
        when another replica holds the lease. For a run begun as it is queued on this replica's live CLI:
        one trip to the session's row instead of three, and the row as it now is (the unit of work's
        object brought up to date), so the caller need not read it again."""
        _, to_run = _claim_statements(self.dialect)
        values = _claim_values(self.dialect, session_id, owner, ttl_seconds)
        result = await self.session.execute(to_run, {**values, "at": at, "seqs": seqs})
        row = result.scalar_one_or_none()
        return RunClaim(row.lease_token, row.last_seq, row) if row is not None else None

    async def renew(self, owner: str, tokens: Mapping[str, int], *, ttl_seconds: float) -> set[str]:
        """Extend our leases; returns the ids still ours under the token we hold (not one another
        replica took, nor one fenced off by a reaper)."""
        if not tokens:
            return set()
        result = await self.session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id.in_(list(tokens)), AgentSession.lease_owner == owner)
            .values(lease_expires_at=db_later(self.dialect, ttl_seconds))
            .returning(AgentSession.id, AgentSession.lease_token)
            .execution_options(synchronize_session=False)
        )
        return {session_id for session_id, token in result.all() if tokens.get(session_id) == token}

    async def release(self, session_id: str, fence: Fence) -> None:
        """Give the lease up, if it is still the one `fence` names."""
        await self.session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id, fence.matches())
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )

    async def check(self, session_id: str, fence: Fence) -> None:
        """Raise StaleLease unless the lease is still the one `fence` names; locks the session row
        until the transaction ends, so the answer holds for the rest of it."""
        result = await self.session.execute(
            sa.select(AgentSession.id).where(AgentSession.id == session_id, fence.matches()).with_for_update()
        )
        if result.scalar_one_or_none() is None:
            raise StaleLease(session_id, fence)

    async def fence_off(self, session_id: str, holder: str | None) -> bool:
        """Before a reaper settles a run of `holder`: True when that replica can no longer write the
        session. A lapsed lease gets a new generation (and no owner), so whatever the old holder still
        sends is refused; a lease another replica has taken is fenced already. False when `holder`
        renewed in time after all."""
        result = await self.session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id, self._lapsed())
            .values(lease_owner=None, lease_expires_at=None, lease_token=AgentSession.lease_token + 1)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            return True
        owner = await self.session.execute(
            sa.select(AgentSession.lease_owner).where(AgentSession.id == session_id)
        )
        return owner.scalar_one_or_none() != holder

    async def is_live(self, session_id: str) -> bool:
        """Some replica holds the session's lease, by the database's clock: its agent runs there."""
        result = await self.session.execute(
            sa.select(AgentSession.id).where(
                AgentSession.id == session_id,
                AgentSession.lease_owner.is_not(None),
                sa.not_(self._lapsed()),
            )
        )
        return result.scalar_one_or_none() is not None
