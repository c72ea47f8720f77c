"""The PermissionRequest type and its enums."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from api.runtime.permissions import snapshot
from persistence.models import PermissionRequest as PermissionRequestModel


@strawberry.enum(description="Where a permission request stands.")
class PermissionRequestStatus(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Waiting for a decision; the tool has not run.")
    ALLOWED = strawberry.enum_value("ALLOWED", description="Allowed: the tool ran (or runs) with the input.")
    DENIED = strawberry.enum_value("DENIED", description="Denied: the message went back to the model.")
    EXPIRED = strawberry.enum_value(
        "EXPIRED", description="Nobody decided within PERMISSION_TIMEOUT_SECONDS; the tool was denied."
    )
    CANCELLED = strawberry.enum_value(
        "CANCELLED", description="Its run ended first (interrupt, time limit, failure); the tool never ran."
    )


@strawberry.enum(description="The answer to a permission request.")
class PermissionDecision(Enum):
    ALLOW = strawberry.enum_value("ALLOW", description="Let the tool run.")
    DENY = strawberry.enum_value("DENY", description="Do not run it; the model gets the message instead.")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@strawberry.type(
    description="A tool call the agent asked permission for. Questions to the user (AskUserQuestion) are "
    "permission requests too: their `input` holds the questions."
)
class PermissionRequest:
    id: strawberry.ID = strawberry.field(description="The request's id, for decidePermission.")
    session_id: strawberry.ID = strawberry.field(description="The session whose agent asked.")
    run_id: strawberry.ID | None = strawberry.field(description="The run during which it asked.")
    tool_name: str = strawberry.field(description="The tool, e.g. Write, Bash or AskUserQuestion.")
    tool_use_id: strawberry.ID | None = strawberry.field(
        description="The ToolUseBlock id of the call, to match it in the event stream."
    )
    input: JSON = strawberry.field(description="The input the tool would run with.")
    status: PermissionRequestStatus = strawberry.field(description="Where the request stands.")
    message: str | None = strawberry.field(
        description="The denial's message to the model, or why the server expired or cancelled it."
    )
    updated_input: JSON | None = strawberry.field(
        description="The input the decision replaced the original with, if it did."
    )
    allow_for_session: bool = strawberry.field(
        description="Whether the decision also allowed this tool for the rest of the session."
    )
    decided_by: str | None = strawberry.field(
        description="Who decided: the API key as key:<id>, or system (expired, cancelled)."
    )
    title: str | None = strawberry.field(description="The agent's own sentence for the request.")
    display_name: str | None = strawberry.field(description="A short name for the action, e.g. Write.")
    description: str | None = strawberry.field(description="A subtitle, e.g. the file concerned.")
    blocked_path: str | None = strawberry.field(description="The path that made it ask, when one did.")
    created_at: datetime = strawberry.field(description="When the agent asked.")
    decided_at: datetime | None = strawberry.field(description="When it was decided, expired or cancelled.")
    expires_at: datetime | None = strawberry.field(
        description="When it expires (and is denied) if nobody decides."
    )

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> PermissionRequest:
        """From the JSON kept in PermissionRequested/PermissionDecided events (the state at that time)."""
        context = data.get("context") or {}
        run_id, tool_use_id = data.get("run_id"), data.get("tool_use_id")
        return cls(
            id=strawberry.ID(data["id"]),
            session_id=strawberry.ID(data["session_id"]),
            run_id=strawberry.ID(run_id) if run_id else None,
            tool_name=data["tool_name"],
            tool_use_id=strawberry.ID(tool_use_id) if tool_use_id else None,
            input=cast(JSON, data.get("input") or {}),
            status=PermissionRequestStatus(data["status"]),
            message=data.get("message"),
            updated_input=cast(JSON, data.get("updated_input")),
            allow_for_session=bool(data.get("allow_for_session")),
            decided_by=data.get("decided_by"),
            title=context.get("title"),
            display_name=context.get("display_name"),
            description=context.get("description"),
            blocked_path=context.get("blocked_path"),
            created_at=datetime.fromisoformat(data["created_at"]),
            decided_at=_time(data.get("decided_at")),
            expires_at=_time(data.get("expires_at")),
        )

    @classmethod
    def from_model(cls, row: PermissionRequestModel) -> PermissionRequest:
        return cls.from_snapshot(snapshot(row))
