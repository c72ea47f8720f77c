"""Runs: the queue of prompts per session and their lifecycle."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import AgentSession, Run
from persistence.repositories.leases import LeaseRepository

ACTIVE_STATUSES = ("QUEUED", "RUNNING")


# What the listings (the GraphQL loaders) show of a run (graphql_schema.types.Run.from_model and its
# checkpoints), read as plain rows: building, tracking and populating an ORM object for each of a
# listing's runs (a page of 20 sessions with their first runs is a hundred-odd) was over a tenth of the
# `sessions` query's CPU. A run's options are left out: its full option set (system prompt, MCP servers,
# output schema…) can be large and no listed field shows it. The listings' statements are written with
# the table's columns, not the mapped class's attributes: a statement of the ORM's goes through its
# compile and result setup on every execution even when it loads no object.
_RUNS = cast(sa.Table, Run.__table__)
LISTED: tuple[sa.Column[Any], ...] = tuple(
    _RUNS.c[name]
    for name in (
        "id",
        "session_id",
        "status",
        "prompt",
        "prompt_uuid",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "cost_usd",
        "usage",
        "result",
    )
)
# A run as a listing reads it: a row of the LISTED columns, read by the same attribute names as a Run.
ListedRun = sa.Row[Any]


def _first_pages() -> sa.Select[Any]:
    runs = _RUNS.c
    position = (
        sa.func.row_number()
        .over(partition_by=runs.session_id, order_by=(runs.created_at, runs.id))
        .label("position")
    )
    numbered = (
        sa.select(runs.id, position)
        .where(runs.session_id.in_(sa.bindparam("session_ids", expanding=True)))
        .subquery()
    )
    return (
        sa.select(*LISTED)
        .join(numbered, numbered.c.id == runs.id)
        .where(numbered.c.position <= sa.bindparam("limit"))
        .order_by(runs.session_id, runs.created_at, runs.id)
    )


# The loaders' statements, built once with their values as parameters: building one (and SQLAlchemy's
# cache key for it, which a statement object keeps) took more CPU than running it on a read.
_FIRST_PAGES = _first_pages()
_STARTED = (
    sa.select(*LISTED)
    .where(
        _RUNS.c.session_id.in_(sa.bindparam("session_ids", expanding=True)), _RUNS.c.started_at.is_not(None)
    )
    .order_by(_RUNS.c.session_id, _RUNS.c.created_at, _RUNS.c.id)
)

# startRun's statements, built once likewise: each of a follow-up's runs beside its CLI (send_ahead), so
# the CPU spent building statements was taken from the agent's own turn (issue 10).
_SESSION_AND_ACTIVE = (
    sa.select(AgentSession, _RUNS.c.id)
    .outerjoin(_RUNS, sa.and_(_RUNS.c.session_id == AgentSession.id, _RUNS.c.status.in_(ACTIVE_STATUSES)))
    .where(AgentSession.id == sa.bindparam("session_id"), AgentSession.tenant_id == sa.bindparam("tenant_id"))
    .order_by(_RUNS.c.created_at, _RUNS.c.id)
    .execution_options(populate_existing=True)
)
_INSERT = _RUNS.insert()
_QUEUED_AND_ACTIVE = sa.select(
    sa.func.coalesce(sa.func.sum(sa.case((_RUNS.c.status == "QUEUED", 1), else_=0)), 0), sa.func.count()
).where(_RUNS.c.tenant_id == sa.bindparam("tenant_id"), _RUNS.c.status.in_(ACTIVE_STATUSES))


class RunRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        run_id: str,
        session_id: str,
        tenant_id: str,
        prompt: str,
        prompt_uuid: str,
        options: dict[str, Any],
        api_key_id: str | None,
        at: datetime,
        started_on: str | None = None,
    ) -> Run:
        """A QUEUED run; with `started_on` (a replica id) a run already RUNNING there, begun as it
        was queued (the caller holds the session's lease). Written at once with a Core INSERT: the object
        returned is not in the unit of work (a flush of one would cost more than the insert)."""
        values: dict[str, Any] = dict(
            id=run_id,
            session_id=session_id,
            tenant_id=tenant_id,
            status="QUEUED" if started_on is None else "RUNNING",
            prompt=prompt,
            prompt_uuid=prompt_uuid,
            options=options,
            api_key_id=api_key_id,
            created_at=at,
            replica=started_on,
            started_at=at if started_on is not None else None,
            interrupt_requested=False,
        )
        await self.session.execute(_INSERT, values)
        return Run(**values)

    async def get(self, run_id: str, *, tenant_id: str | None = None) -> Run | None:
        run = await self.session.get(Run, run_id, populate_existing=True)
        if run is None or (tenant_id is not None and run.tenant_id != tenant_id):
            return None
        return run

    async def get_many(self, ids: Sequence[str]) -> Sequence[Run]:
        result = await self.session.execute(sa.select(Run).where(Run.id.in_(ids)))
        return result.scalars().all()

    async def list_for_session(
        self, session_id: str, *, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[ListedRun]:
        """Oldest first, as rows of the LISTED columns; `after` is the (created_at, id) of the last run of
        the previous page."""
        runs = _RUNS.c
        stmt = sa.select(*LISTED).where(runs.session_id == session_id)
        if after is not None:
            created_at, run_id = after
            stmt = stmt.where(
                sa.or_(runs.created_at > created_at, sa.and_(runs.created_at == created_at, runs.id > run_id))
            )
        stmt = stmt.order_by(runs.created_at, runs.id).limit(limit)
        return (await self.session.execute(stmt)).all()

    async def first_pages(self, session_ids: Sequence[str], *, limit: int) -> dict[str, list[ListedRun]]:
        """The first `limit` runs of each session, oldest first, in one statement (a window per session),
        as rows of the LISTED columns."""
        if not session_ids:
            return {}
        pages: dict[str, list[ListedRun]] = {session_id: [] for session_id in session_ids}
        result = await self.session.execute(_FIRST_PAGES, {"session_ids": list(session_ids), "limit": limit})
        for run in result:
            pages[run.session_id].append(run)
        return pages

    async def started_for_sessions(self, session_ids: Sequence[str]) -> dict[str, list[ListedRun]]:
        """Every run of each session that has started (its checkpoints), oldest first, as rows of the
        LISTED columns."""
        found: dict[str, list[ListedRun]] = {session_id: [] for session_id in session_ids}
        result = await self.session.execute(_STARTED, {"session_ids": list(session_ids)})
        for run in result:
            found[run.session_id].append(run)
        return found

    async def by_checkpoint(self, session_id: str, checkpoint_id: str) -> Run | None:
        """The session's run whose prompt uuid (its file checkpoint id) is `checkpoint_id`."""
        result = await self.session.execute(
            sa.select(Run).where(Run.session_id == session_id, Run.prompt_uuid == checkpoint_id)
        )
        return result.scalars().first()

    async def latest_for_session(self, session_id: str) -> Run | None:
        result = await self.session.execute(
            sa.select(Run)
            .where(Run.session_id == session_id)
            .order_by(Run.created_at.desc(), Run.id.desc())
            .limit(1)
        )
        return result.scalars().first()

    async def session_and_active_runs(
        self, session_id: str, *, tenant_id: str
    ) -> tuple[AgentSession, list[str]] | None:
        """The tenant's session and the ids of its runs QUEUED or RUNNING (oldest first), in one
        statement; None when the session does not exist or belongs to another tenant."""
        result = await self.session.execute(
            _SESSION_AND_ACTIVE, {"session_id": session_id, "tenant_id": tenant_id}
        )
        rows = result.all()
        if not rows:
            return None
        return rows[0][0], [run_id for _, run_id in rows if run_id is not None]

    async def active_for_session(self, session_id: str) -> Sequence[Run]:
        result = await self.session.execute(
            sa.select(Run)
            .where(Run.session_id == session_id, Run.status.in_(ACTIVE_STATUSES))
            .order_by(Run.created_at, Run.id)
        )
        return result.scalars().all()

    async def count_queued_and_active_for_tenant(self, tenant_id: str) -> tuple[int, int]:
        """The tenant's QUEUED runs, and its QUEUED and RUNNING ones, in one statement."""
        result = await self.session.execute(_QUEUED_AND_ACTIVE, {"tenant_id": tenant_id})
        row = result.one()
        return int(row[0]), int(row[1])

    async def count_queued(self, *, tenant_id: str | None = None) -> int:
        """Runs waiting QUEUED, the tenant's or everyone's."""
        stmt = sa.select(sa.func.count()).select_from(Run).where(Run.status == "QUEUED")
        if tenant_id is not None:
            stmt = stmt.where(Run.tenant_id == tenant_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def queue_positions(self, keys: Sequence[tuple[datetime, str]]) -> dict[str, int]:
        """Where each queued run (by created_at, id) stands in the deployment's queue: 1 is next. The
        dispatchers take the oldest queued run first, so the position is the number of queued runs
        created before it, plus one (an estimate: a session's later runs wait for its earlier ones)."""
        if not keys:
            return {}
        last = max(keys)
        stmt = (
            sa.select(Run.created_at, Run.id)
            .where(
                Run.status == "QUEUED",
                sa.or_(Run.created_at < last[0], sa.and_(Run.created_at == last[0], Run.id <= last[1])),
            )
            .order_by(Run.created_at, Run.id)
        )
        ahead = [(row.created_at, row.id) for row in await self.session.execute(stmt)]
        positions: dict[str, int] = {}
        for key in keys:
            positions[key[1]] = bisect.bisect_left(ahead, key) + 1
        return positions

    async def claimable(self, owner: str, *, limit: int) -> Sequence[Run]:
        """The oldest QUEUED run of each session nobody else is running, oldest sessions first."""
        running = sa.select(Run.session_id).where(Run.status == "RUNNING")
        stmt = (
            sa.select(Run)
            .join(AgentSession, AgentSession.id == Run.session_id)
            .where(
                Run.status == "QUEUED",
                Run.session_id.not_in(running),
                LeaseRepository(self.session).claimable_by(owner),
            )
            .order_by(Run.created_at, Run.id)
            .limit(limit * 4)
        )
        seen: set[str] = set()
        runs: list[Run] = []
        for run in (await self.session.execute(stmt)).scalars():
            if run.session_id not in seen:
                seen.add(run.session_id)
                runs.append(run)
            if len(runs) >= limit:
                break
        return runs

    async def orphaned(self) -> Sequence[Run]:
        """RUNNING runs whose replica no longer holds the session's lease: it lapsed (by the database's
        clock: the replica is gone or cut off), or another replica took it."""
        stmt = (
            sa.select(Run)
            .join(AgentSession, AgentSession.id == Run.session_id)
            .where(
                Run.status == "RUNNING",
                sa.or_(
                    LeaseRepository(self.session).lapsed(),
                    AgentSession.lease_owner.is_distinct_from(Run.replica),
                ),
            )
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def transition(self, run_id: str, *, from_statuses: Sequence[str], values: dict[str, Any]) -> bool:
        """Compare-and-set on status, so two replicas cannot both move one run."""
        result = await self.session.execute(
            sa.update(Run)
            .where(Run.id == run_id, Run.status.in_(from_statuses))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def request_interrupt(self, run_id: str) -> None:
        await self.session.execute(sa.update(Run).where(Run.id == run_id).values(interrupt_requested=True))
