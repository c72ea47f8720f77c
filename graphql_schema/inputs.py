"""Mutation inputs and enums."""

from __future__ import annotations

from enum import Enum

import strawberry
from strawberry.scalars import JSON


@strawberry.enum(description="How the agent asks before using tools.")
class PermissionMode(Enum):
    DEFAULT = "DEFAULT"
    ACCEPT_EDITS = "ACCEPT_EDITS"
    PLAN = "PLAN"
    BYPASS_PERMISSIONS = "BYPASS_PERMISSIONS"


@strawberry.enum(description="What startRun does when the session is mid-run.")
class BusyPolicy(Enum):
    REJECT = "REJECT"
    ENQUEUE = "ENQUEUE"
    INTERRUPT = "INTERRUPT"


@strawberry.enum(description="What interruptRun did; the run in the payload shows the state after it.")
class InterruptOutcome(Enum):
    INTERRUPTED = strawberry.enum_value(
        "INTERRUPTED",
        description="The agent stopped when told to (the run reads INTERRUPTED; RUNNING only if its "
        "replica did not answer within the wait, the interrupt then stays recorded).",
    )
    ALREADY_FINISHED = strawberry.enum_value(
        "ALREADY_FINISHED", description="The run had ended, or ended on its own before the interrupt took."
    )
    ABORTED = strawberry.enum_value(
        "ABORTED",
        description="The run was still queued and will never run, or its agent ignored the interrupt "
        "and was stopped.",
    )


@strawberry.input(description="A subagent the main agent may delegate to.")
class AgentDefinitionInput:
    name: str
    description: str = strawberry.field(description="When the main agent should use it.")
    prompt: str = strawberry.field(description="The subagent's system prompt.")
    tools: list[str] | None = None
    model: str | None = None


@strawberry.input(description="A prompt for a new session, or the next turn of an existing one.")
class StartRunInput:
    prompt: str
    session_id: strawberry.ID | None = strawberry.field(
        default=None, description="Absent: a new session. Present: the next turn of that session."
    )
    title: str | None = strawberry.field(default=None, description="A new session's title.")
    model: str | None = None
    system_prompt: str | None = None
    permission_mode: PermissionMode | None = None
    allowed_tools: list[str] | None = strawberry.field(
        default=None,
        description="Pre-approved tools or rules (e.g. Bash(npm test:*)): they run without asking. Every "
        "other tool call the permission mode does not allow asks first: a PermissionRequested event, "
        "answered with decidePermission.",
    )
    disallowed_tools: list[str] | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    output_schema: JSON | None = strawberry.field(
        default=None, description="A JSON Schema; the result's structuredOutput follows it."
    )
    mcp_servers: list[str] | None = strawberry.field(
        default=None, description="Names from the operator's registry."
    )
    agents: list[AgentDefinitionInput] | None = None
    on_busy: BusyPolicy = BusyPolicy.ENQUEUE
