"""Sessions (their leases: persistence/repositories/leases.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import AgentSession

# What a listing shows of a session (graphql_schema.types.Session.from_model), read as plain rows: a page
# of 20 ORM objects (each built, tracked in the identity map and populated attribute by attribute) was
# about a tenth of the `sessions` query's CPU, and a listing only reads them. The table's columns, not the
# mapped class's attributes: a statement of the ORM's goes through its compile and result setup on every
# execution even when it loads no object.
_SESSIONS = cast(sa.Table, AgentSession.__table__).c
LISTED: tuple[sa.Column[Any], ...] = tuple(
    _SESSIONS[name]
    for name in (
        "id",
        "title",
        "status",
        "created_at",
        "updated_at",
        "last_seq",
        "total_cost_usd",
        "tags",
        "archived_at",
        "forked_from_id",
    )
)
# A session as a listing reads it: a row of the LISTED columns, read by the same attribute names.
ListedSession = sa.Row[Any]


@dataclass(frozen=True)
class SessionQuery:
    tenant_id: str
    status: str | None = None
    title_contains: str | None = None
    # None: archived or not; True: only archived; False: only not archived.
    archived: bool | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        session_id: str,
        tenant_id: str,
        title: str | None,
        at: datetime,
        forked_from_id: str | None = None,
        resume_at: str | None = None,
        tags: Sequence[str] = (),
    ) -> AgentSession:
        row = AgentSession(
            id=session_id,
            tenant_id=tenant_id,
            title=title,
            status="IDLE",
            created_at=at,
            updated_at=at,
            last_seq=0,
            total_cost_usd=0.0,
            forked_from_id=forked_from_id,
            fork_source_id=forked_from_id,
            resume_at=resume_at,
            tags=list(tags),
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def get(self, session_id: str, *, tenant_id: str | None = None) -> AgentSession | None:
        """The session, or None when it does not exist or belongs to another tenant."""
        row = await self.session.get(AgentSession, session_id, populate_existing=True)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            return None
        return row

    async def find(self, session_id: str, *, tenant_id: str) -> ListedSession | None:
        """The session as a listing reads it (a row of the LISTED columns), or None when it does not exist
        or belongs to another tenant: for the `session` query, which only reads it."""
        values = {"session_id": session_id, "tenant_id": tenant_id}
        row: ListedSession | None = (await self.session.execute(_ONE, values)).first()
        return row

    async def get_many(self, ids: Sequence[str], *, tenant_id: str) -> Sequence[AgentSession]:
        result = await self.session.execute(
            sa.select(AgentSession).where(AgentSession.id.in_(ids), AgentSession.tenant_id == tenant_id)
        )
        return result.scalars().all()

    async def list(
        self, query: SessionQuery, *, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[ListedSession]:
        """Newest first, as rows of the LISTED columns; `after` is the (created_at, id) of the last row of
        the previous page."""
        if query == SessionQuery(tenant_id=query.tenant_id):
            # Unfiltered (what most listings are): a statement built once, its values as parameters.
            values: dict[str, Any] = {"tenant_id": query.tenant_id, "limit": limit}
            if after is None:
                return (await self.session.execute(_FIRST_PAGE, values)).all()
            values["created_at"], values["id"] = after
            return (await self.session.execute(_PAGE_AFTER, values)).all()
        dialect = self.session.get_bind().dialect.name
        statement = self.listing(query, after=after, limit=limit, dialect=dialect)
        rows: Sequence[ListedSession] = (await self.session.execute(statement)).all()
        return rows

    @staticmethod
    def listing(
        query: SessionQuery, *, after: tuple[datetime, str] | None, limit: int, dialect: str = "sqlite"
    ) -> sa.Select[Any]:
        """The statement of `list`, ordered as ix_sessions_tenant_id_created_at_id is, so no sort."""
        stmt = _matching(sa.select(*LISTED), query, dialect)
        if after is not None:
            created_at, session_id = after
            stmt = stmt.where(
                sa.or_(
                    AgentSession.created_at < created_at,
                    sa.and_(AgentSession.created_at == created_at, AgentSession.id < session_id),
                )
            )
        return stmt.order_by(AgentSession.created_at.desc(), AgentSession.id.desc()).limit(limit)

    async def any_before(self, query: SessionQuery, position: tuple[datetime, str]) -> bool:
        """Whether a matching session is at `position` or comes before it in the listing (is newer), so a
        page after that cursor has items before it: one index probe."""
        dialect = self.session.get_bind().dialect.name
        created_at, session_id = position
        stmt = (
            _matching(sa.select(AgentSession.id), query, dialect)
            .where(
                sa.or_(
                    AgentSession.created_at > created_at,
                    sa.and_(AgentSession.created_at == created_at, AgentSession.id >= session_id),
                )
            )
            .limit(1)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def update(self, session_id: str, at: datetime, **values: object) -> None:
        """Set the given columns (title, tags, archived_at, resume_at…) and updated_at."""
        await self.session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id)
            .values(updated_at=at, **values)
            .execution_options(synchronize_session=False)
        )

    async def set_resume_point(
        self, session_id: str, *, resume_at: str | None, fork_source_id: str | None
    ) -> None:
        """Where the next CLI connection starts (no updated_at change: it is bookkeeping, not news)."""
        await self.session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id)
            .values(resume_at=resume_at, fork_source_id=fork_source_id)
            .execution_options(synchronize_session=False)
        )

    async def delete(self, session_id: str) -> bool:
        """Delete the row; its events, runs and permission requests go with it (ON DELETE CASCADE)."""
        result = await self.session.execute(
            sa.delete(AgentSession)
            .where(AgentSession.id == session_id)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def changed_since(
        self, tenant_id: str, since: datetime, *, after: tuple[datetime, str] | None = None, limit: int
    ) -> Sequence[AgentSession]:
        """The tenant's sessions with updated_at >= since, oldest change first; `after` is the
        (updated_at, id) of the last row of the previous page."""
        stmt = sa.select(AgentSession).where(
            AgentSession.tenant_id == tenant_id, AgentSession.updated_at >= since
        )
        if after is not None:
            updated_at, session_id = after
            stmt = stmt.where(
                sa.or_(
                    AgentSession.updated_at > updated_at,
                    sa.and_(AgentSession.updated_at == updated_at, AgentSession.id > session_id),
                )
            )
        stmt = stmt.order_by(AgentSession.updated_at, AgentSession.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def last_seq(self, session_id: str) -> int:
        result = await self.session.execute(
            sa.select(AgentSession.last_seq).where(AgentSession.id == session_id)
        )
        return int(result.scalar_one_or_none() or 0)

    async def lock(self, session_id: str) -> None:
        """Lock the session's row until the transaction ends (a no-op on SQLite, which locks the file).

        Every transaction that changes a session and one of its runs takes the session first: one lock
        order everywhere, so two of them cannot deadlock (starting a run vs. finishing it)."""
        if self.session.get_bind().dialect.name == "sqlite":
            return  # nothing to lock: one writer at a time holds the whole file, and a read costs a trip
        await self.session.execute(
            sa.select(AgentSession.id).where(AgentSession.id == session_id).with_for_update()
        )

    async def set_status(self, session_id: str, status: str, at: datetime) -> None:
        await self.session.execute(
            sa.update(AgentSession).where(AgentSession.id == session_id).values(status=status, updated_at=at)
        )

    async def add_cost(self, session_id: str, cost_usd: float) -> None:
        await self.session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id)
            .values(total_cost_usd=AgentSession.total_cost_usd + cost_usd)
        )


def _has_tag(tag: str, dialect: str) -> sa.ColumnElement[bool]:
    """`tags` holds the tag: JSONB containment on PostgreSQL, json_each on SQLite."""
    if dialect == "postgresql":
        return sa.type_coerce(AgentSession.tags, JSONB).contains([tag])
    values = sa.func.json_each(AgentSession.tags).table_valued("value")
    return sa.exists(sa.select(1).select_from(values).where(values.c.value == tag))


SelectT = TypeVar("SelectT", bound=sa.Select[Any])


def _matching(stmt: SelectT, query: SessionQuery, dialect: str) -> SelectT:
    """`stmt` narrowed to the tenant's sessions that match the query's filters."""
    stmt = stmt.where(AgentSession.tenant_id == query.tenant_id)
    if query.status:
        stmt = stmt.where(AgentSession.status == query.status)
    if query.title_contains:
        stmt = stmt.where(AgentSession.title.icontains(query.title_contains, autoescape=True))
    if query.archived is not None:
        archived = AgentSession.archived_at.is_not(None)
        stmt = stmt.where(archived if query.archived else sa.not_(archived))
    if query.tag is not None:
        stmt = stmt.where(_has_tag(query.tag, dialect))
    if query.created_after is not None:
        stmt = stmt.where(AgentSession.created_at > query.created_after)
    if query.created_before is not None:
        stmt = stmt.where(AgentSession.created_at < query.created_before)
    return stmt


# `list`'s unfiltered statements, built once: building one and SQLAlchemy's cache key for it (which a
# statement object keeps) on every listing was a few per cent of the `sessions` query's CPU. The same
# statements as `listing` builds for a query without filters.
_NEWEST_FIRST = (_SESSIONS.created_at.desc(), _SESSIONS.id.desc())
_FIRST_PAGE = (
    sa.select(*LISTED)
    .where(_SESSIONS.tenant_id == sa.bindparam("tenant_id"))
    .order_by(*_NEWEST_FIRST)
    .limit(sa.bindparam("limit"))
)
_PAGE_AFTER = (
    sa.select(*LISTED)
    .where(_SESSIONS.tenant_id == sa.bindparam("tenant_id"))
    .where(
        sa.or_(
            _SESSIONS.created_at < sa.bindparam("created_at"),
            sa.and_(_SESSIONS.created_at == sa.bindparam("created_at"), _SESSIONS.id < sa.bindparam("id")),
        )
    )
    .order_by(*_NEWEST_FIRST)
    .limit(sa.bindparam("limit"))
)
# `find`'s statement: one session of a tenant, as a listing reads it.
_ONE = sa.select(*LISTED).where(
    _SESSIONS.id == sa.bindparam("session_id"), _SESSIONS.tenant_id == sa.bindparam("tenant_id")
)
