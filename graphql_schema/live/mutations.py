"""setModel and setPermissionMode: typed commands to the replica whose agent runs the session."""

from __future__ import annotations

from typing import Annotated

import strawberry

from api import errors
from graphql_schema.context import Info
from graphql_schema.errors import (
    Error,
    NotFoundError,
    PolicyViolationError,
    ValidationError,
    not_found_error,
    policy_violation_error,
    validation_error,
)
from graphql_schema.inputs import PermissionMode
from graphql_schema.types import Session
from persistence.models import AgentSession


@strawberry.type(
    description="The session's live agent took the change; it applies from the agent's next model request "
    "(the next AssistantMessage shows the model). A change the agent refuses is a ValidationError."
)
class LiveControlSuccess:
    session: Session = strawberry.field(description="The session.")


@strawberry.type(
    description="The session has no live agent (no run since its agent was stopped), or its agent did not "
    "answer in time."
)
class SessionNotLiveError(Error):
    session_id: strawberry.ID = strawberry.field(description="The session.")


SetModelResult = Annotated[
    LiveControlSuccess | NotFoundError | ValidationError | SessionNotLiveError,
    strawberry.union("SetModelResult", description="What setModel did."),
]
SetPermissionModeResult = Annotated[
    LiveControlSuccess | NotFoundError | ValidationError | PolicyViolationError | SessionNotLiveError,
    strawberry.union("SetPermissionModeResult", description="What setPermissionMode did."),
]


def _not_live(exc: errors.SessionNotLive) -> SessionNotLiveError:
    return SessionNotLiveError(code=exc.code, message=exc.message, session_id=strawberry.ID(exc.session_id))


def _success(row: AgentSession) -> LiveControlSuccess:
    return LiveControlSuccess(session=Session.from_model(row))


@strawberry.type
class LiveMutations:
    @strawberry.mutation(description="Switch the model of a session's live agent, mid-run if need be.")
    async def set_model(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description="The session.")],
        model: Annotated[
            str | None, strawberry.argument(description="A model name or alias; null: the default.")
        ] = None,
    ) -> SetModelResult:
        principal = info.context.require_principal()
        try:
            row = await info.context.services.live_control.set_model(principal, str(session_id), model)
        except errors.ValidationFailed as exc:
            return validation_error(exc)
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.SessionNotLive as exc:
            return _not_live(exc)
        return _success(row)

    @strawberry.mutation(
        description="Switch the permission mode of a session's live agent, within the server's "
        "ALLOWED_PERMISSION_MODES."
    )
    async def set_permission_mode(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description="The session.")],
        mode: Annotated[PermissionMode, strawberry.argument(description="The new mode.")],
    ) -> SetPermissionModeResult:
        principal = info.context.require_principal()
        try:
            row = await info.context.services.live_control.set_permission_mode(
                principal, str(session_id), mode.name
            )
        except errors.ValidationFailed as exc:
            return validation_error(exc)
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.PolicyViolation as exc:
            return policy_violation_error(exc)
        except errors.SessionNotLive as exc:
            return _not_live(exc)
        return _success(row)
