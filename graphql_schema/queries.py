"""Read side: sessions, runs, the event log and the audit trail, each scoped to the caller's tenant."""

from __future__ import annotations

from typing import Annotated

import strawberry

from api.errors import NotFound
from graphql_schema import cursors
from graphql_schema.context import Info
from graphql_schema.event_types import SessionEvent
from graphql_schema.types import (
    AFTER,
    FIRST,
    MAX_PAGE,
    AuditEntryConnection,
    AuditEntryType,
    AuditFilter,
    Run,
    Session,
    SessionConnection,
    SessionFilter,
    page_of,
    time_id_cursor,
)
from persistence.repositories.audit import AuditQuery, AuditRepository
from persistence.repositories.events import EventRepository
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionQuery, SessionRepository

MAX_EVENTS_PAGE = 1000


@strawberry.type(
    description="Reading: sessions, runs, the event log and the audit trail of the caller's tenant."
)
class Query:
    @strawberry.field(description="A session of the caller's tenant, or null.")
    async def session(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The session's id.")]
    ) -> Session | None:
        principal = info.context.require_principal()
        async with info.context.loaders.reading() as db:
            row = await SessionRepository(db).find(str(id), tenant_id=principal.tenant_id)
        return Session.from_model(row) if row else None

    @strawberry.field(description="The caller's sessions, newest first.")
    async def sessions(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
        filter: Annotated[
            SessionFilter | None, strawberry.argument(description="Only the sessions that match.")
        ] = None,
    ) -> SessionConnection:
        principal = info.context.require_principal()
        limit = cursors.page_size(first, default=20, maximum=MAX_PAGE)
        position = cursors.decode_time_id(after) if after else None
        query = SessionQuery(
            tenant_id=principal.tenant_id,
            status=filter.status if filter else None,
            title_contains=filter.title_contains if filter else None,
            archived=filter.archived if filter else None,
            tag=filter.tag if filter else None,
            created_after=filter.created_after if filter else None,
            created_before=filter.created_before if filter else None,
        )
        async with info.context.loaders.reading() as db:
            repository = SessionRepository(db)
            rows = await repository.list(query, after=position, limit=limit + 1)
            previous = position is not None and await repository.any_before(query, position)
        edges, page_info = page_of(
            rows, limit, time_id_cursor, Session.from_model, has_previous_page=previous
        )
        return SessionConnection(edges=edges, page_info=page_info)

    @strawberry.field(description="A run of the caller's tenant, or null.")
    async def run(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The run's id.")]
    ) -> Run | None:
        principal = info.context.require_principal()
        async with info.context.loaders.reading() as db:
            row = await RunRepository(db).get(str(id), tenant_id=principal.tenant_id)
        return Run.from_model(row) if row else None

    @strawberry.field(
        description="A session's durable events with seq > afterSeq, in order; page on with the last seq."
    )
    async def events(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description="The session's id.")],
        after_seq: Annotated[
            int | None, strawberry.argument(description="Only events with a larger seq; 0 for all.")
        ] = 0,
        first: Annotated[
            int | None, strawberry.argument(description=f"How many events, from 1 to {MAX_EVENTS_PAGE}.")
        ] = 100,
    ) -> list[SessionEvent]:
        principal = info.context.require_principal()
        limit = cursors.page_size(first, default=100, maximum=MAX_EVENTS_PAGE)
        after_seq = after_seq or 0
        async with info.context.loaders.reading() as db:
            rows = await EventRepository(db).page_of_tenant(
                str(session_id), max(0, after_seq), limit, tenant_id=principal.tenant_id
            )
        if rows is None:
            raise NotFound("Session", str(session_id))
        from_columns = SessionEvent.from_columns
        return [
            from_columns(session, seq, run, kind, payload, created_at)
            for session, seq, run, kind, payload, created_at in rows
        ]

    @strawberry.field(description="The tenant's control actions, newest first.")
    async def audit_log(
        self,
        info: Info,
        filter: Annotated[
            AuditFilter | None, strawberry.argument(description="Only the entries that match.")
        ] = None,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 50,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> AuditEntryConnection:
        principal = info.context.require_principal()
        limit = cursors.page_size(first, default=50, maximum=MAX_PAGE)
        before_id = int(cursors.decode(after, 1)[0]) if after else None
        query = AuditQuery(
            tenant_id=principal.tenant_id,
            action=filter.action if filter else None,
            target_type=filter.target_type if filter else None,
            target_id=str(filter.target_id) if filter and filter.target_id else None,
            actor=filter.actor if filter else None,
            since=filter.since if filter else None,
            until=filter.until if filter else None,
        )
        async with info.context.loaders.reading() as db:
            rows = await AuditRepository(db).list(query, before_id=before_id, limit=limit + 1)
        edges, page_info = page_of(
            rows,
            limit,
            lambda r: cursors.encode(r.id),
            AuditEntryType.from_model,
            has_previous_page=before_id is not None,
        )
        return AuditEntryConnection(edges=edges, page_info=page_info)
