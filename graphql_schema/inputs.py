"""Mutation inputs and enums."""

from __future__ import annotations

from enum import Enum

import strawberry
from strawberry.scalars import JSON


@strawberry.enum(description="How the agent asks before using tools.")
class PermissionMode(Enum):
    DEFAULT = strawberry.enum_value(
        "DEFAULT", description="Tools not pre-approved by allowedTools ask before they run."
    )
    ACCEPT_EDITS = strawberry.enum_value(
        "ACCEPT_EDITS", description="File edits in the session's workspace are accepted without asking."
    )
    PLAN = strawberry.enum_value("PLAN", description="The agent plans and reads; it changes nothing.")
    BYPASS_PERMISSIONS = strawberry.enum_value(
        "BYPASS_PERMISSIONS",
        description="Every tool runs without asking. Refused unless the operator allows it.",
    )


@strawberry.enum(description="What startRun does when the session is mid-run.")
class BusyPolicy(Enum):
    REJECT = strawberry.enum_value("REJECT", description="Answer SessionBusyError; nothing is created.")
    ENQUEUE = strawberry.enum_value(
        "ENQUEUE", description="Queue the new run; it starts when the runs before it have ended."
    )
    INTERRUPT = strawberry.enum_value(
        "INTERRUPT", description="Interrupt the runs in progress, then run this one."
    )


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


@strawberry.enum(description="How much effort the model puts into its answer; it guides thinking depth.")
class Effort(Enum):
    LOW = strawberry.enum_value("LOW", description="Minimal thinking, fastest answers.")
    MEDIUM = strawberry.enum_value("MEDIUM", description="Moderate thinking.")
    HIGH = strawberry.enum_value("HIGH", description="Deep reasoning.")
    XHIGH = strawberry.enum_value(
        "XHIGH", description="Deeper still, on models that offer it (others treat it as HIGH)."
    )
    MAX = strawberry.enum_value("MAX", description="The most effort the model offers.")


@strawberry.enum(description="Whether and how the model thinks before it answers.")
class ThinkingMode(Enum):
    ADAPTIVE = strawberry.enum_value(
        "ADAPTIVE", description="The model decides when and how much to think (on models that support it)."
    )
    ENABLED = strawberry.enum_value("ENABLED", description="Thinking with a fixed budget of budgetTokens.")
    DISABLED = strawberry.enum_value("DISABLED", description="No extended thinking.")


@strawberry.enum(description="What thinking blocks carry.")
class ThinkingDisplay(Enum):
    SUMMARIZED = strawberry.enum_value("SUMMARIZED", description="A summary of the thinking as text.")
    OMITTED = strawberry.enum_value("OMITTED", description="The signature only, no text.")


@strawberry.input(description="Extended thinking for a run.")
class ThinkingInput:
    mode: ThinkingMode = strawberry.field(description="Adaptive, a fixed budget, or off.")
    budget_tokens: int | None = strawberry.field(
        default=None, description="With ENABLED only, and required there: from 1024 to 128000 tokens."
    )
    display: ThinkingDisplay | None = strawberry.field(
        default=None, description="What thinking blocks carry; absent: the CLI's default. Not with DISABLED."
    )


@strawberry.input(description="Claude Code's own system prompt, with text of yours after it.")
class SystemPromptPresetInput:
    append: str | None = strawberry.field(
        default=None, description="Appended to Claude Code's system prompt; absent: the prompt as it is."
    )


@strawberry.input(description="A subagent the main agent may delegate to.")
class AgentDefinitionInput:
    name: str = strawberry.field(description="The subagent's name: letters, digits, _ and -, up to 64.")
    description: str = strawberry.field(description="When the main agent should use it.")
    prompt: str = strawberry.field(description="The subagent's system prompt.")
    tools: list[str] | None = strawberry.field(
        default=None, description="The tools it may use; absent: the main agent's."
    )
    model: str | None = strawberry.field(default=None, description="Its model; absent: the main agent's.")


@strawberry.input(description="A prompt for a new session, or the next turn of an existing one.")
class StartRunInput:
    prompt: str = strawberry.field(
        description="What to ask the agent; sent verbatim (no @file, no /commands)."
    )
    session_id: strawberry.ID | None = strawberry.field(
        default=None, description="Absent: a new session. Present: the next turn of that session."
    )
    title: str | None = strawberry.field(default=None, description="A new session's title.")
    model: str | None = strawberry.field(
        default=None, description="The model to run; absent: the server's default."
    )
    fallback_model: str | None = strawberry.field(
        default=None,
        description="The model the CLI switches to when the main one is overloaded; must differ from it.",
    )
    system_prompt: str | None = strawberry.field(
        default=None,
        description="Replaces the default system prompt (absent, and no systemPromptPreset: the SDK's "
        "minimal prompt).",
    )
    system_prompt_preset: SystemPromptPresetInput | None = strawberry.field(
        default=None,
        description="Claude Code's own system prompt, optionally with text appended; not with systemPrompt.",
    )
    thinking: ThinkingInput | None = strawberry.field(
        default=None, description="Extended thinking; absent: the CLI's default for the model."
    )
    effort: Effort | None = strawberry.field(
        default=None, description="How much effort the model puts in; absent: the CLI's default."
    )
    permission_mode: PermissionMode | None = strawberry.field(
        default=None, description="How the agent asks before using tools; absent: DEFAULT."
    )
    allowed_tools: list[str] | None = strawberry.field(
        default=None,
        description="Pre-approved tools or rules (e.g. Bash(npm test:*)): they run without asking. Every "
        "other tool call the permission mode does not allow asks first: a PermissionRequested event, "
        "answered with decidePermission.",
    )
    disallowed_tools: list[str] | None = strawberry.field(
        default=None, description="Tools or rules the agent may not use in this run."
    )
    max_turns: int | None = strawberry.field(
        default=None, description="The most model turns the run may take, from 1 to the operator's cap."
    )
    max_budget_usd: float | None = strawberry.field(
        default=None, description="The run stops when its cost reaches this many US dollars."
    )
    output_schema: JSON | None = strawberry.field(
        default=None, description="A JSON Schema; the result's structuredOutput follows it."
    )
    mcp_servers: list[str] | None = strawberry.field(
        default=None,
        description="MCP servers the agent may use, by name from the operator's registry (never a command "
        "or URL); their tools are named mcp__<server>__<tool> and follow the tool policy. An unregistered "
        "or, for this tenant, unallowed name is a PolicyViolationError (rule mcp_servers).",
    )
    agents: list[AgentDefinitionInput] | None = strawberry.field(
        default=None, description="Subagents the agent may delegate to."
    )
    on_busy: BusyPolicy = strawberry.field(
        default=BusyPolicy.ENQUEUE, description="What to do when the session has a run in progress."
    )
