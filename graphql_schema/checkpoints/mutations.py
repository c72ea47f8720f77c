"""rewindFiles and forkSession."""

from __future__ import annotations

from typing import Annotated

import strawberry

from api import errors
from graphql_schema.context import Info
from graphql_schema.errors import (
    Error,
    NotFoundError,
    PolicyViolationError,
    SessionBusyError,
    ValidationError,
    not_found_error,
    policy_violation_error,
    session_busy_error,
    validation_error,
)
from graphql_schema.types import Session


@strawberry.input(description="Which checkpoint to rewind a session's files to, and whether to apply it.")
class RewindFilesInput:
    session_id: strawberry.ID = strawberry.field(description="The session.")
    checkpoint_id: strawberry.ID = strawberry.field(
        description="A checkpoint of the session (Session.checkpoints, Run.checkpointId): the files go back "
        "to their state before that run's prompt."
    )
    dry_run: bool = strawberry.field(default=False, description="Only say what would change; change nothing.")
    conversation: bool = strawberry.field(
        default=False,
        description="Also rewind the conversation: the next turn continues from the message before that "
        "prompt (the turns after it stay in the event log). Not for the first prompt.",
    )


@strawberry.input(description="Which session to fork, and where.")
class ForkSessionInput:
    session_id: strawberry.ID = strawberry.field(description="The session to fork.")
    at_message_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A message uuid of that session (AssistantMessage.uuid, UserMessage.uuid, or a "
        "checkpoint id): the fork's conversation goes up to and including it. Absent: all of it.",
    )
    title: str | None = strawberry.field(
        default=None, description="The fork's title; absent: the original's title and \" (fork)\"."
    )


@strawberry.type(description="What the rewind changed (or, for a dry run, would change).")
class RewindFilesSuccess:
    files_changed: list[str] = strawberry.field(
        description="The files restored or removed, relative to the session's workspace."
    )
    insertions: int = strawberry.field(description="Lines the rewind adds back.")
    deletions: int = strawberry.field(description="Lines the rewind takes away.")
    applied: bool = strawberry.field(description="False for a dry run: nothing was changed.")


@strawberry.type(description="The checkpoint is known, but the agent cannot rewind to it.")
class CheckpointUnavailableError(Error):
    checkpoint_id: strawberry.ID = strawberry.field(description="The checkpoint.")
    reason: str = strawberry.field(description="Why, as the agent or the server says.")


@strawberry.type(description="The fork: a new session that takes turns of its own.")
class ForkSessionSuccess:
    session: Session = strawberry.field(description="The new session; its forkedFrom is the original.")


RewindFilesResult = Annotated[
    RewindFilesSuccess | NotFoundError | SessionBusyError | CheckpointUnavailableError | PolicyViolationError,
    strawberry.union("RewindFilesResult", description="What the rewind did, or why it did nothing."),
]
ForkSessionResult = Annotated[
    ForkSessionSuccess | NotFoundError | SessionBusyError | ValidationError,
    strawberry.union("ForkSessionResult", description="The new session, or why none was made."),
]


@strawberry.type
class CheckpointMutations:
    @strawberry.mutation(
        description="Put a session's files back as they were before a run's prompt (or preview it with "
        "dryRun). Refused with SessionBusyError while a run is queued or running. Works whether or not "
        "the session's agent is running. A FilesRewound event joins the session's log. With "
        "SESSION_STORE=database there are no file checkpoints: PolicyViolationError, rule session_store."
    )
    async def rewind_files(
        self,
        info: Info,
        input: Annotated[RewindFilesInput, strawberry.argument(description="The session and checkpoint.")],
    ) -> RewindFilesResult:
        principal = info.context.require_principal()
        try:
            outcome = await info.context.services.checkpoint_control.rewind(
                principal,
                str(input.session_id),
                str(input.checkpoint_id),
                dry_run=input.dry_run,
                conversation=input.conversation,
            )
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.SessionBusy as exc:
            return session_busy_error(exc)
        except errors.PolicyViolation as exc:
            return policy_violation_error(exc)
        except errors.CheckpointUnavailable as exc:
            return CheckpointUnavailableError(
                code=exc.code,
                message=exc.message,
                checkpoint_id=strawberry.ID(exc.checkpoint_id),
                reason=exc.reason,
            )
        return RewindFilesSuccess(
            files_changed=outcome.files_changed,
            insertions=outcome.insertions,
            deletions=outcome.deletions,
            applied=outcome.applied,
        )

    @strawberry.mutation(
        description="A new session from a session's conversation (up to a message) and a copy of its "
        "workspace; the original stays as it is. Refused with SessionBusyError while a run is active."
    )
    async def fork_session(
        self,
        info: Info,
        input: Annotated[ForkSessionInput, strawberry.argument(description="The session and where to fork.")],
    ) -> ForkSessionResult:
        principal = info.context.require_principal()
        try:
            row = await info.context.services.checkpoint_control.fork(
                principal,
                str(input.session_id),
                str(input.at_message_id) if input.at_message_id is not None else None,
                input.title,
            )
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.SessionBusy as exc:
            return session_busy_error(exc)
        except errors.ValidationFailed as exc:
            return validation_error(exc)
        return ForkSessionSuccess(session=Session.from_model(row))
