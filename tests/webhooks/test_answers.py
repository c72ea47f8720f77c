"""A webhook's answer as the SDK hook output, and answers that are refused."""

from __future__ import annotations

import pytest

from api.webhooks.answers import Answer, BadAnswer, Combined
from api.webhooks.dispatcher import HookCall, request_body, unavailable_output


def output(event: str, *answers: dict[str, object]) -> dict[str, object]:
    combined = Combined()
    for answer in answers:
        combined.add(Answer.parse(answer))
    return combined.to_output(event)


def test_pre_tool_use_gets_a_permission_decision_with_reason_and_input() -> None:
    assert output(
        "PreToolUse",
        {"decision": "allow", "reason": "ok", "updatedInput": {"a": 1}, "additionalContext": "c"},
    ) == {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow",
            "permissionDecisionReason": "ok",
            "updatedInput": {"a": 1},
            "additionalContext": "c",
        }
    }


def test_deny_outweighs_ask_outweighs_allow_and_a_denied_tool_keeps_its_input() -> None:
    out = output(
        "PreToolUse",
        {"decision": "allow", "updatedInput": {"a": 1}},
        {"decision": "deny", "reason": "no"},
        {"decision": "ask"},
    )
    assert out == {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": "no",
        }
    }


def test_continue_false_stops_the_agent_and_denies_a_pending_tool() -> None:
    assert output("Stop", {"continue": False, "reason": "enough"}) == {
        "continue_": False,
        "stopReason": "enough",
    }
    pre = output("PreToolUse", {"continue": False})
    assert pre["continue_"] is False
    assert pre["hookSpecificOutput"] == {"hookEventName": "PreToolUse", "permissionDecision": "deny"}


def test_decision_counts_for_pre_tool_use_only_and_context_where_accepted() -> None:
    assert output("PostToolUse", {"decision": "deny", "additionalContext": "note"}) == {
        "hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "note"}
    }
    assert output("PreCompact", {"additionalContext": "ignored"}) == {}
    assert output("UserPromptSubmit", {}) == {}


@pytest.mark.parametrize(
    "body",
    [
        [],
        "allow",
        {"decision": "maybe"},
        {"reason": 3},
        {"continue": "no"},
        {"updatedInput": "x"},
        {"additionalContext": ["a"]},
    ],
)
def test_malformed_answers_are_refused(body: object) -> None:
    with pytest.raises(BadAnswer):
        Answer.parse(body)


def test_when_webhooks_cannot_be_read_pre_tool_use_is_denied_and_the_rest_go_on() -> None:
    denied = unavailable_output("PreToolUse")
    assert denied["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert unavailable_output("PostToolUse") == {}


def test_the_body_lifts_tool_fields_and_leaves_server_paths_out() -> None:
    call = HookCall(
        tenant_id="t",
        session_id="s",
        run_id="r",
        hook_event="PreToolUse",
        input={
            "session_id": "s",
            "transcript_path": "/srv/data/claude/projects/x.jsonl",
            "cwd": "/srv/data/workspaces/s",
            "hook_event_name": "PreToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": "ls"},
            "tool_use_id": "toolu_1",
            "permission_mode": "default",
        },
        tool_use_id="toolu_1",
    )
    assert request_body(call) == (
        b'{"hookEvent":"PreToolUse","sessionId":"s","runId":"r","toolName":"Bash",'
        b'"toolInput":{"command":"ls"},"data":{"tool_use_id":"toolu_1","permission_mode":"default"}}'
    )
