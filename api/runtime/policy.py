"""What a remote caller may ask of an agent, checked before anything is written."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from api.errors import ValidationFailed
from api.runtime.tool_policy import PolicyBook, ToolPolicy
from api.settings import Settings

PERMISSION_MODES = {
    "DEFAULT": "default",
    "ACCEPT_EDITS": "acceptEdits",
    "PLAN": "plan",
    "BYPASS_PERMISSIONS": "bypassPermissions",
}
EFFORTS = {"LOW": "low", "MEDIUM": "medium", "HIGH": "high", "XHIGH": "xhigh", "MAX": "max"}
THINKING_MODES = {"ADAPTIVE": "adaptive", "ENABLED": "enabled", "DISABLED": "disabled"}
THINKING_DISPLAYS = {"SUMMARIZED": "summarized", "OMITTED": "omitted"}
# The Messages API's floor for a thinking budget; the ceiling keeps a typo from buying a huge one.
MIN_THINKING_TOKENS = 1024
MAX_THINKING_TOKENS = 128_000
_TOOL_RULE = re.compile(r"^[A-Za-z0-9_\-:.*]+(\([^()\n]{0,500}\))?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9._:\-\[\]]{1,100}$")
_AGENT_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SYSTEM_PROMPT_CHARS = 100_000
MAX_TOOL_RULES = 100


@dataclass(frozen=True)
class RunRequest:
    """A startRun input as the API layer hands it over (plain values, no GraphQL types)."""

    prompt: str
    session_id: str | None = None
    model: str | None = None
    fallback_model: str | None = None
    system_prompt: str | None = None
    # {"append": str | None}: the Claude Code system prompt, with text appended.
    system_prompt_preset: dict[str, Any] | None = None
    # {"mode": ADAPTIVE | ENABLED | DISABLED, "budget_tokens": int | None, "display": SUMMARIZED | OMITTED}
    thinking: dict[str, Any] | None = None
    effort: str | None = None
    permission_mode: str | None = None
    allowed_tools: list[str] | None = None
    disallowed_tools: list[str] | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    output_schema: Any = None
    mcp_servers: list[str] | None = None
    agents: list[dict[str, Any]] | None = None
    on_busy: str = "ENQUEUE"
    title: str | None = None


@dataclass(frozen=True)
class RunOptions:
    """The options a run executes with, after policy; stored on the run as JSON (MCP servers by name
    only: their configs, which may hold credentials, stay in the operator's registry)."""

    model: str | None = None
    fallback_model: str | None = None
    system_prompt: str | None = None
    # The Claude Code preset instead of system_prompt: {"append": str} or {} (the SDK's shape, minus type).
    system_prompt_preset: dict[str, Any] | None = None
    # The SDK's ThinkingConfig: {"type": "adaptive" | "enabled" | "disabled", "budget_tokens"?, "display"?}.
    thinking: dict[str, Any] | None = None
    effort: str | None = None
    mcp_servers: list[str] = field(default_factory=list)
    permission_mode: str | None = None
    allowed_tools: list[str] = field(default_factory=list)
    disallowed_tools: list[str] = field(default_factory=list)
    max_turns: int | None = None
    max_budget_usd: float | None = None
    output_schema: dict[str, Any] | None = None
    agents: dict[str, dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fallback_model": self.fallback_model,
            "system_prompt": self.system_prompt,
            "system_prompt_preset": self.system_prompt_preset,
            "thinking": self.thinking,
            "effort": self.effort,
            "mcp_servers": self.mcp_servers,
            "permission_mode": self.permission_mode,
            "allowed_tools": self.allowed_tools,
            "disallowed_tools": self.disallowed_tools,
            "max_turns": self.max_turns,
            "max_budget_usd": self.max_budget_usd,
            "output_schema": self.output_schema,
            "agents": self.agents,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOptions:
        return cls(
            model=data.get("model"),
            fallback_model=data.get("fallback_model"),
            system_prompt=data.get("system_prompt"),
            system_prompt_preset=data.get("system_prompt_preset"),
            thinking=data.get("thinking"),
            effort=data.get("effort"),
            mcp_servers=list(data.get("mcp_servers") or []),
            permission_mode=data.get("permission_mode"),
            allowed_tools=list(data.get("allowed_tools") or []),
            disallowed_tools=list(data.get("disallowed_tools") or []),
            max_turns=data.get("max_turns"),
            max_budget_usd=data.get("max_budget_usd"),
            output_schema=data.get("output_schema"),
            agents=data.get("agents"),
        )


def _tools(values: list[str] | None, field_name: str) -> list[str]:
    values = values or []
    if len(values) > MAX_TOOL_RULES:
        raise ValidationFailed(f"at most {MAX_TOOL_RULES} tool rules", field=field_name)
    for value in values:
        if not _TOOL_RULE.match(value):
            raise ValidationFailed(f"not a tool name or rule: {value!r}", field=field_name)
    return list(values)


def check_prompt(prompt: str, settings: Settings) -> None:
    if not prompt.strip():
        raise ValidationFailed("prompt must not be empty", field="prompt")
    if len(prompt) > settings.max_prompt_chars:
        raise ValidationFailed(
            f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}", field="prompt"
        )


def _agents(values: list[dict[str, Any]] | None, settings: Settings) -> dict[str, dict[str, Any]] | None:
    if not values:
        return None
    agents: dict[str, dict[str, Any]] = {}
    for value in values:
        name = value["name"]
        if not _AGENT_NAME.match(name):
            raise ValidationFailed(f"agent name {name!r} must match {_AGENT_NAME.pattern}", field="agents")
        if name in agents:
            raise ValidationFailed(f"agent {name!r} is defined twice", field="agents")
        definition: dict[str, Any] = {"description": value["description"], "prompt": value["prompt"]}
        if value.get("tools") is not None:
            definition["tools"] = _tools(value["tools"], "agents.tools")
        if value.get("model"):
            check_model(value["model"], "agents.model")
            definition["model"] = value["model"]
        agents[name] = definition
    return agents


def check_model(model: str, field_name: str = "model") -> None:
    if not _MODEL_NAME.match(model):
        raise ValidationFailed(f"{field_name} is not a model name", field=field_name)


def _system_prompt_preset(request: RunRequest) -> dict[str, Any] | None:
    preset = request.system_prompt_preset
    if preset is None:
        return None
    if request.system_prompt is not None:
        raise ValidationFailed(
            "give systemPrompt (a prompt of your own) or systemPromptPreset (Claude Code's), not both",
            field="systemPromptPreset",
        )
    append = preset.get("append")
    if append is None:
        return {}
    if len(append) > MAX_SYSTEM_PROMPT_CHARS:
        raise ValidationFailed("systemPromptPreset.append is too long", field="systemPromptPreset.append")
    return {"append": append}


def _thinking(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The SDK's ThinkingConfig for a ThinkingInput."""
    if value is None:
        return None
    mode, budget, display = value["mode"], value.get("budget_tokens"), value.get("display")
    config: dict[str, Any] = {"type": THINKING_MODES[mode]}
    if mode == "ENABLED":
        if budget is None or not MIN_THINKING_TOKENS <= budget <= MAX_THINKING_TOKENS:
            raise ValidationFailed(
                f"thinking ENABLED needs budgetTokens from {MIN_THINKING_TOKENS} to {MAX_THINKING_TOKENS}",
                field="thinking.budgetTokens",
            )
        config["budget_tokens"] = budget
    elif budget is not None:
        raise ValidationFailed("budgetTokens goes with thinking ENABLED only", field="thinking.budgetTokens")
    if display is not None:
        if mode == "DISABLED":
            raise ValidationFailed("display does not go with thinking DISABLED", field="thinking.display")
        config["display"] = THINKING_DISPLAYS[display]
    return config


def check_permission_mode(mode: str, rules: ToolPolicy) -> str:
    """The SDK's name for a PermissionMode value the operator's rules allow, or a PolicyViolation."""
    rules.check_mode(mode)
    return PERMISSION_MODES[mode]


def apply_policy(request: RunRequest, settings: Settings, rules: ToolPolicy | None = None) -> RunOptions:
    """Validate a run request and turn it into the options the agent gets, or raise a typed error.

    `rules` are the operator's for the caller's tenant; without them, the deployment's from settings.
    """
    rules = rules or PolicyBook.from_settings(settings).for_tenant("")
    check_prompt(request.prompt, settings)
    permission_mode = None
    if request.permission_mode is not None:
        permission_mode = check_permission_mode(request.permission_mode, rules)
    if request.max_turns is not None and not 1 <= request.max_turns <= settings.max_turns_cap:
        raise ValidationFailed(f"maxTurns must be between 1 and {settings.max_turns_cap}", field="maxTurns")
    if request.max_budget_usd is not None and request.max_budget_usd <= 0:
        raise ValidationFailed("maxBudgetUsd must be positive", field="maxBudgetUsd")
    max_budget_usd = rules.budgets.run_budget(request.max_budget_usd)
    if request.system_prompt is not None and len(request.system_prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise ValidationFailed("systemPrompt is too long", field="systemPrompt")
    # Names only, from the operator's registry: a caller never gives a command or a URL.
    mcp_servers = rules.check_mcp_servers(request.mcp_servers or [])
    schema = request.output_schema
    if schema is not None:
        if not isinstance(schema, dict):
            raise ValidationFailed("outputSchema must be a JSON Schema object", field="outputSchema")
        if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
            raise ValidationFailed("outputSchema is too large", field="outputSchema")
    if request.model is not None:
        check_model(request.model)
    model = request.model or settings.default_model
    if request.fallback_model is not None:
        check_model(request.fallback_model, "fallbackModel")
        # The CLI refuses to start with a fallback equal to the model: say so before anything is written.
        if request.fallback_model == model:
            raise ValidationFailed("fallbackModel must differ from the run's model", field="fallbackModel")
    allowed_tools = _tools(request.allowed_tools, "allowedTools")
    rules.check_pre_approved(allowed_tools, "allowedTools")
    disallowed_tools = _tools(request.disallowed_tools, "disallowedTools")
    disallowed_tools += [tool for tool in rules.denied_tools if tool not in disallowed_tools]
    return RunOptions(
        model=model,
        fallback_model=request.fallback_model,
        system_prompt=request.system_prompt,
        system_prompt_preset=_system_prompt_preset(request),
        thinking=_thinking(request.thinking),
        effort=EFFORTS[request.effort] if request.effort is not None else None,
        mcp_servers=mcp_servers,
        permission_mode=permission_mode,
        allowed_tools=allowed_tools,
        disallowed_tools=disallowed_tools,
        max_turns=request.max_turns,
        max_budget_usd=max_budget_usd,
        output_schema=schema,
        agents=_agents(request.agents, settings),
    )
