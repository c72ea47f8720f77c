"""Write side of webhooks: register and delete, each answering with a union of success and errors."""

from __future__ import annotations

from typing import Annotated

import strawberry

from api import errors
from api.webhooks.registry import WebhookRequest
from graphql_schema.context import Info
from graphql_schema.errors import (
    NotFoundError,
    PolicyViolationError,
    ValidationError,
    not_found_error,
    policy_violation_error,
    validation_error,
)
from graphql_schema.webhooks.types import RegisterWebhookInput, Webhook


@strawberry.type(description="The webhook was registered.")
class RegisterWebhookSuccess:
    webhook: Webhook = strawberry.field(description="The new webhook.")


@strawberry.type(description="The webhook was deleted; it is never called again.")
class DeleteWebhookSuccess:
    id: strawberry.ID = strawberry.field(description="The deleted webhook's id.")


RegisterWebhookResult = Annotated[
    RegisterWebhookSuccess | ValidationError | PolicyViolationError,
    strawberry.union("RegisterWebhookResult", description="The webhook, or why it was refused."),
]
DeleteWebhookResult = Annotated[
    DeleteWebhookSuccess | NotFoundError,
    strawberry.union("DeleteWebhookResult", description="The deleted id, or not found."),
]


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(
        description="Register an endpoint for hook events; it applies to agent CLIs started from now on."
    )
    async def register_webhook(
        self,
        info: Info,
        input: Annotated[
            RegisterWebhookInput, strawberry.argument(description="The URL, events and secret.")
        ],
    ) -> RegisterWebhookResult:
        principal = info.context.require_principal()
        request = WebhookRequest(
            url=input.url,
            events=list(input.events),
            secret=input.secret,
            failure_mode=input.failure_mode.name if input.failure_mode else None,
        )
        try:
            row = await info.context.services.webhooks.register(principal, request)
        except errors.ValidationFailed as exc:
            return validation_error(exc)
        except errors.PolicyViolation as exc:
            return policy_violation_error(exc)
        return RegisterWebhookSuccess(webhook=Webhook.from_model(row))

    @strawberry.mutation(description="Delete one of the tenant's webhooks.")
    async def delete_webhook(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The webhook's id.")]
    ) -> DeleteWebhookResult:
        principal = info.context.require_principal()
        try:
            await info.context.services.webhooks.delete(principal, str(id))
        except errors.NotFound as exc:
            return not_found_error(exc)
        return DeleteWebhookSuccess(id=id)
