"""Reading the live agent: its context window."""

from __future__ import annotations

from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON

from graphql_schema.context import Info


@strawberry.type(description="How full the live agent's context window is (the CLI's /context).")
class ContextUsage:
    model: str = strawberry.field(description="The model the usage is counted for.")
    total_tokens: int = strawberry.field(description="Tokens in the context window now.")
    max_tokens: int = strawberry.field(description="The usable maximum (less the autocompact buffer).")
    percentage: float = strawberry.field(description="totalTokens as a percentage of the window, 0-100.")
    categories: JSON = strawberry.field(description="Tokens per category: system prompt, tools, messages…")
    raw: JSON = strawberry.field(description="Everything the CLI reported, verbatim.")

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> ContextUsage:
        return cls(
            model=str(data.get("model") or ""),
            total_tokens=int(data.get("totalTokens") or 0),
            max_tokens=int(data.get("maxTokens") or 0),
            percentage=float(data.get("percentage") or 0.0),
            categories=cast(JSON, data.get("categories") or []),
            raw=cast(JSON, data),
        )


@strawberry.type
class LiveQueries:
    @strawberry.field(
        description="The context window usage of a session's live agent, asked of the replica running it; "
        "null when the session has no live agent (or is not the caller's)."
    )
    async def context_usage(
        self,
        info: Info,
        session_id: Annotated[strawberry.ID, strawberry.argument(description="The session.")],
    ) -> ContextUsage | None:
        principal = info.context.require_principal()
        usage = await info.context.services.live_control.context_usage(principal, str(session_id))
        return ContextUsage.from_response(usage) if usage is not None else None
