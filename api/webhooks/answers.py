"""A webhook's answer, and how answers become the SDK hook output.

The answer is `{decision: allow|deny|ask, reason, additionalContext, continue, updatedInput}`, every
field optional. `decision` and `updatedInput` count for PreToolUse only; `additionalContext` for the
events that accept it; `continue: false` stops the agent on any event (and denies a PreToolUse's tool).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DECISIONS = ("allow", "deny", "ask")
# Strongest first: one webhook's deny outweighs another's allow.
_PRECEDENCE = {"deny": 0, "ask": 1, "allow": 2}
# Events whose hookSpecificOutput takes additionalContext (reference §4).
CONTEXT_EVENTS = frozenset(
    {
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
        "UserPromptSubmit",
        "Stop",
        "SubagentStop",
        "SubagentStart",
        "Notification",
    }
)


class BadAnswer(ValueError):
    """The body is not an answer."""


@dataclass(frozen=True)
class Answer:
    decision: str | None = None
    reason: str | None = None
    additional_context: str | None = None
    continue_: bool = True
    updated_input: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: Any) -> Answer:
        if not isinstance(body, dict):
            raise BadAnswer("the answer is not a JSON object")
        decision = body.get("decision")
        if decision is not None and decision not in DECISIONS:
            raise BadAnswer(f"decision must be one of {', '.join(DECISIONS)}")
        reason, context = body.get("reason"), body.get("additionalContext")
        for name, value in (("reason", reason), ("additionalContext", context)):
            if value is not None and not isinstance(value, str):
                raise BadAnswer(f"{name} must be a string")
        proceed = body.get("continue", True)
        if not isinstance(proceed, bool):
            raise BadAnswer("continue must be a boolean")
        updated = body.get("updatedInput")
        if updated is not None and not isinstance(updated, dict):
            raise BadAnswer("updatedInput must be an object")
        return cls(decision, reason, context, proceed, updated)


@dataclass
class Combined:
    """Every answer of one hook call (usually one webhook's) folded into one."""

    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    stop: bool = False
    updated_input: dict[str, Any] | None = None

    def add(self, answer: Answer) -> None:
        if answer.decision is not None and (
            self.decision is None or _PRECEDENCE[answer.decision] < _PRECEDENCE[self.decision]
        ):
            self.decision = answer.decision
        if answer.reason:
            self.reasons.append(answer.reason)
        if answer.additional_context:
            self.contexts.append(answer.additional_context)
        if not answer.continue_:
            self.stop = True
        if answer.updated_input is not None and self.updated_input is None:
            self.updated_input = answer.updated_input

    def to_output(self, hook_event: str) -> dict[str, Any]:
        """The SDK's hook output (`continue_` is sent to the CLI as `continue`)."""
        output: dict[str, Any] = {}
        reason = "; ".join(self.reasons) or None
        if self.stop:
            output["continue_"] = False
            output["stopReason"] = reason or "a webhook stopped the agent"
        specific: dict[str, Any] = {"hookEventName": hook_event}
        decision = self.decision
        if hook_event == "PreToolUse" and self.stop:
            # Measured: `continue: false` alone still runs the pending tool, then stops. A stop means
            # the tool too.
            decision = "deny"
        if hook_event == "PreToolUse" and decision is not None:
            specific["permissionDecision"] = decision
            if reason:
                specific["permissionDecisionReason"] = reason
            if self.updated_input is not None and decision != "deny":
                specific["updatedInput"] = self.updated_input
        if self.contexts and hook_event in CONTEXT_EVENTS:
            specific["additionalContext"] = "\n".join(self.contexts)
        if len(specific) > 1:
            output["hookSpecificOutput"] = specific
        return output
