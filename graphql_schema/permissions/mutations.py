"""Deciding permission requests and answering the agent's questions, from any replica."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from api import errors
from api.control.permissions import PermissionChoice
from graphql_schema.context import Info
from graphql_schema.errors import (
    Error,
    NotFoundError,
    ValidationError,
    not_found_error,
    validation_error,
)
from graphql_schema.permissions.types import PermissionDecision, PermissionRequest, PermissionRequestStatus
from persistence.models import PermissionRequest as PermissionRequestModel


@strawberry.input(description="The answer to one permission request.")
class DecidePermissionInput:
    request_id: strawberry.ID = strawberry.field(description="The PermissionRequest's id.")
    decision: PermissionDecision = strawberry.field(description="ALLOW or DENY.")
    message: str | None = strawberry.field(
        default=None, description="With DENY: what the model is told (the tool result's error)."
    )
    updated_input: JSON | None = strawberry.field(
        default=None,
        description="With ALLOW: run the tool with this input instead (for AskUserQuestion: "
        "{questions, answers}). Absent: the original input.",
    )
    allow_for_session: bool | None = strawberry.field(
        default=False,
        description="With ALLOW: also allow this tool without asking for the rest of the session (a "
        "session-scoped rule; nothing is written to settings files).",
    )


@strawberry.input(description="Answers to an AskUserQuestion request.")
class AnswerQuestionInput:
    request_id: strawberry.ID = strawberry.field(description="The AskUserQuestion request's id.")
    answers: JSON = strawberry.field(
        description='Question text → answer, e.g. {"Which color?": "Blue"}; several choices comma-separated.'
    )


@strawberry.type(description="The request was decided; the agent goes on with the answer.")
class DecidePermissionSuccess:
    request: PermissionRequest = strawberry.field(description="The request, decided.")


@strawberry.type(
    description="The request was decided already: by someone, by its deadline or by its run ending."
)
class PermissionAlreadyDecidedError(Error):
    request_id: strawberry.ID = strawberry.field(description="The request.")
    status: PermissionRequestStatus = strawberry.field(description="What it became.")


DecidePermissionResult = Annotated[
    DecidePermissionSuccess | NotFoundError | ValidationError | PermissionAlreadyDecidedError,
    strawberry.union("DecidePermissionResult", description="What decidePermission did."),
]
AnswerQuestionResult = Annotated[
    DecidePermissionSuccess | NotFoundError | ValidationError | PermissionAlreadyDecidedError,
    strawberry.union("AnswerQuestionResult", description="What answerQuestion did."),
]


def _already_decided(exc: errors.PermissionAlreadyDecided) -> PermissionAlreadyDecidedError:
    return PermissionAlreadyDecidedError(
        code=exc.code,
        message=exc.message,
        request_id=strawberry.ID(exc.request_id),
        status=PermissionRequestStatus(exc.status),
    )


def _success(row: PermissionRequestModel) -> DecidePermissionSuccess:
    return DecidePermissionSuccess(request=PermissionRequest.from_model(row))


@strawberry.type
class PermissionMutations:
    @strawberry.mutation(
        description="Allow or deny a pending permission request. Works on any replica; a decision is "
        "final (a second one gets PermissionAlreadyDecidedError)."
    )
    async def decide_permission(
        self,
        info: Info,
        input: Annotated[
            DecidePermissionInput, strawberry.argument(description="The request and the answer.")
        ],
    ) -> DecidePermissionResult:
        principal = info.context.require_principal()
        choice = PermissionChoice(
            request_id=str(input.request_id),
            allow=input.decision is PermissionDecision.ALLOW,
            message=input.message,
            updated_input=input.updated_input,
            allow_for_session=bool(input.allow_for_session),
        )
        try:
            row = await info.context.services.permission_control.decide(principal, choice)
        except errors.ValidationFailed as exc:
            return validation_error(exc)
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.PermissionAlreadyDecided as exc:
            return _already_decided(exc)
        return _success(row)

    @strawberry.mutation(
        description="Answer an AskUserQuestion request: ALLOW with the answers added to its input."
    )
    async def answer_question(
        self,
        info: Info,
        input: Annotated[
            AnswerQuestionInput, strawberry.argument(description="The request and the answers.")
        ],
    ) -> AnswerQuestionResult:
        principal = info.context.require_principal()
        try:
            row = await info.context.services.permission_control.answer_question(
                principal, str(input.request_id), input.answers
            )
        except errors.ValidationFailed as exc:
            return validation_error(exc)
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.PermissionAlreadyDecided as exc:
            return _already_decided(exc)
        return _success(row)
