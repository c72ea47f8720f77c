"""renameSession, setSessionTags, archiveSession, unarchiveSession and deleteSession; each audited."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import strawberry

from api import errors
from graphql_schema.context import Info
from graphql_schema.errors import (
    NotFoundError,
    SessionBusyError,
    ValidationError,
    not_found_error,
    session_busy_error,
    validation_error,
)
from graphql_schema.types import Session
from persistence.models import AgentSession

SESSION_ID = "The session."


@strawberry.type(description="The session after the change.")
class UpdateSessionSuccess:
    session: Session = strawberry.field(description="The session as it is now.")


@strawberry.type(
    description="The session is gone: its runs, events and permission requests, its workspace and its "
    "agent's files. Its audit entries stay."
)
class DeleteSessionSuccess:
    deleted_session_id: strawberry.ID = strawberry.field(description="The id the session had.")


UpdateSessionResult = Annotated[
    UpdateSessionSuccess | NotFoundError | ValidationError,
    strawberry.union("UpdateSessionResult", description="The changed session, or why nothing changed."),
]
DeleteSessionResult = Annotated[
    DeleteSessionSuccess | NotFoundError | SessionBusyError,
    strawberry.union("DeleteSessionResult", description="The deleted session's id, or why it was kept."),
]


async def _update(action: Callable[[], Awaitable[AgentSession]]) -> UpdateSessionResult:
    try:
        row = await action()
    except errors.NotFound as exc:
        return not_found_error(exc)
    except errors.ValidationFailed as exc:
        return validation_error(exc)
    return UpdateSessionSuccess(session=Session.from_model(row))


@strawberry.type
class SessionMutations:
    @strawberry.mutation(description="Give a session another title.")
    async def rename_session(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description=SESSION_ID)],
        title: Annotated[str, strawberry.argument(description="The new title, 1 to 500 characters.")],
    ) -> UpdateSessionResult:
        principal = info.context.require_principal()
        control = info.context.services.session_control
        return await _update(lambda: control.rename(principal, str(session_id), title))

    @strawberry.mutation(description="Replace a session's tags (filter sessions by one with `filter.tag`).")
    async def set_session_tags(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description=SESSION_ID)],
        tags: Annotated[
            list[str],
            strawberry.argument(
                description="The tags, at most 20 of 1 to 64 characters; duplicates are dropped; [] clears."
            ),
        ],
    ) -> UpdateSessionResult:
        principal = info.context.require_principal()
        control = info.context.services.session_control
        return await _update(lambda: control.set_tags(principal, str(session_id), tags))

    @strawberry.mutation(
        description="Archive a session: listed with `filter.archived: true`; it keeps working as before."
    )
    async def archive_session(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description=SESSION_ID)],
    ) -> UpdateSessionResult:
        principal = info.context.require_principal()
        control = info.context.services.session_control
        return await _update(lambda: control.set_archived(principal, str(session_id), True))

    @strawberry.mutation(description="Take a session out of the archive.")
    async def unarchive_session(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description=SESSION_ID)],
    ) -> UpdateSessionResult:
        principal = info.context.require_principal()
        control = info.context.services.session_control
        return await _update(lambda: control.set_archived(principal, str(session_id), False))

    @strawberry.mutation(
        description="Delete a session and everything it owns, in the database and on disk. Refused with "
        "SessionBusyError while a run is queued or running."
    )
    async def delete_session(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description=SESSION_ID)],
    ) -> DeleteSessionResult:
        principal = info.context.require_principal()
        try:
            await info.context.services.session_control.delete(principal, str(session_id))
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.SessionBusy as exc:
            return session_busy_error(exc)
        return DeleteSessionSuccess(deleted_session_id=session_id)
