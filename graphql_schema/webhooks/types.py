"""The Webhook type, its input and its failure mode. The secret is write-only: no type carries it."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from persistence.models import Webhook as WebhookModel


@strawberry.enum(description="What a webhook's failure (timeout, connection error, non-2xx, bad JSON) does.")
class WebhookFailureMode(Enum):
    OPEN = strawberry.enum_value("OPEN", description="Ignored: the agent goes on as if it had no answer.")
    CLOSED = strawberry.enum_value(
        "CLOSED", description="PreToolUse: the tool is denied with the reason. Other events: the agent stops."
    )


@strawberry.type(
    description="An HTTP endpoint of the tenant that receives the agent's hook events and may answer them. "
    "It applies to agent CLIs started after it was registered (a session's next run starts one when the "
    "tenant's hook events changed); a deleted webhook is never called again."
)
class Webhook:
    id: strawberry.ID = strawberry.field(description="The webhook's id.")
    url: str = strawberry.field(description="Where the events are POSTed.")
    events: list[str] = strawberry.field(description="The hook events it receives (PreToolUse, Stop…).")
    failure_mode: WebhookFailureMode | None = strawberry.field(
        description="Set: what any failure does. Null: the default, PreToolUse fails CLOSED, others OPEN."
    )
    created_at: datetime = strawberry.field(description="When it was registered.")

    @classmethod
    def from_model(cls, row: WebhookModel) -> Webhook:
        return cls(
            id=strawberry.ID(row.id),
            url=row.url,
            events=list(row.events),
            failure_mode=WebhookFailureMode(row.failure_mode) if row.failure_mode else None,
            created_at=row.created_at,
        )


@strawberry.input(
    description="A webhook to register. Each call is a POST of JSON {hookEvent, sessionId, runId, toolName, "
    "toolInput, data} with the header `Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "
    '"<t>.<body>" with the secret>`; the answer may be {decision: allow|deny|ask, reason, additionalContext, '
    "continue, updatedInput} (decision and updatedInput count for PreToolUse only)."
)
class RegisterWebhookInput:
    url: str = strawberry.field(
        description="http:// or https://. Loopback, private, link-local, multicast and unspecified addresses "
        "are refused unless the operator lists them in WEBHOOK_ALLOWED_HOSTS; checked on the resolved "
        "address now and at every call. Redirects are not followed."
    )
    events: list[str] = strawberry.field(
        description="Hook events to receive: PreToolUse, PostToolUse, PostToolUseFailure, UserPromptSubmit, "
        "Stop, SubagentStart, SubagentStop, Notification, PreCompact."
    )
    secret: str = strawberry.field(description="16 to 500 characters; signs every call. Never shown again.")
    failure_mode: WebhookFailureMode | None = strawberry.field(
        default=None,
        description="What a failed call does; absent: PreToolUse fails CLOSED, the other events OPEN.",
    )
