"""Live side: a session's events (replay, then live, losing nothing) and the tenant's session feed."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry

from api.errors import NotFound
from api.events.db_retry import until_database_answers
from api.events.session_feed import session_changes
from api.events.stream import session_events
from graphql_schema.context import Info
from graphql_schema.event_types import SessionEvent, shared_event
from graphql_schema.types import Session, SessionChange
from persistence.repositories.sessions import SessionRepository


@strawberry.type(description="Watching: a session's events as they happen, and the tenant's session feed.")
class Subscription:
    @strawberry.subscription(
        description=(
            "Every durable event with seq > afterSeq exactly once and in order, then live. Resubscribe with "
            "the last seq seen to resume after a disconnect, on any replica."
        )
    )
    async def session_events(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description="The session to watch.")],
        after_seq: Annotated[
            int | None,
            strawberry.argument(description="The last seq already seen: replay starts after it; 0 for all."),
        ] = 0,
        include_partial_messages: Annotated[
            bool | None,
            strawberry.argument(description="Also send live token deltas (PartialMessage, ephemeral)."),
        ] = False,
    ) -> AsyncGenerator[SessionEvent, None]:
        principal = info.context.require_principal()
        services = info.context.services

        async def visible() -> bool:
            async with services.db.session() as db:
                found = await SessionRepository(db).get(str(session_id), tenant_id=principal.tenant_id)
            return found is not None

        # Without token deltas the session's tenant is checked by the replay's first read (session_events'
        # tenant_id). With them, first: their demand is registered before the replay, and must never be
        # for another tenant's session.
        checked_by_replay = not include_partial_messages
        if not checked_by_replay and not await until_database_answers(
            visible, what="session_events", session_id=str(session_id)
        ):
            raise NotFound("Session", str(session_id))
        settings = services.settings
        async for record in session_events(
            services.event_log,
            services.bus,
            str(session_id),
            after_seq=max(0, after_seq or 0),
            include_partial=bool(include_partial_messages),
            page_size=settings.replay_page_size,
            catchup_seconds=settings.catchup_poll_seconds,
            tenant_id=principal.tenant_id if checked_by_replay else None,
        ):
            yield shared_event(record)

    @strawberry.subscription(
        description=(
            "Every session of the caller's tenant: created, status, cost. Where the server may have missed "
            "changes (a fan-out reconnect, a lost message), the sessions changed meanwhile come as UPDATED."
        )
    )
    async def session_changes(self, info: Info) -> AsyncGenerator[SessionChange, None]:
        principal = info.context.require_principal()
        services = info.context.services
        catchup = services.settings.catchup_poll_seconds
        async for kind, row in session_changes(
            services.db, services.bus, principal.tenant_id, catchup_seconds=catchup
        ):
            yield SessionChange(kind=kind, session=Session.from_model(row))
