"""Reading a Messages API request: which scenario it selects, which step it is at, and side calls.

The server keeps no state between requests, because several API replicas and test processes share one
instance. Everything is derived from the conversation the CLI sends with every request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from api.scripted_model.scenario import ScenarioError

SCENARIO_MARKER = "[scenario]"
_NAMED_MARKER = re.compile(r"\[scenario:([^\]\s]+)\]")
_SYSTEM_REMINDER = "<system-reminder>"
# The 2.1.331 CLI puts its environment section in a role="system" message inside `messages`; older
# versions put it in the system prompt. Both are searched.
_CWD_LINE = re.compile(r"Primary working directory:\s*(\S[^\n]*)")


@dataclass(frozen=True, slots=True)
class TurnPosition:
    """Where a conversation request stands in its turn."""

    prompt_text: str  # the newest prompt: the last text block that is not a <system-reminder>
    step_index: int
    cwd: str | None
    turn_key: str  # identifies the turn (session, position, prompt) for deterministic tool ids
    # The prompts of the turns before this one, oldest first: what the model was sent of the history.
    earlier_prompts: tuple[str, ...] = ()


def turn_position(body: dict[str, Any]) -> TurnPosition:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    anchor = _latest_user_text_index(messages)
    prompt = _user_text(messages[anchor]) if anchor is not None else ""
    after = messages[anchor + 1 :] if anchor is not None else messages
    return TurnPosition(
        prompt_text=prompt,
        step_index=_assistant_runs(after),
        cwd=find_cwd(body),
        turn_key=f"{_session_hint(body)}/{anchor}/{prompt}",
        earlier_prompts=_earlier_prompts(messages[:anchor] if anchor is not None else []),
    )


def _earlier_prompts(messages: list[dict[str, Any]]) -> tuple[str, ...]:
    prompts: list[str] = []
    for msg in messages:
        if msg.get("role") != "user" or _has_tool_result(msg):
            continue
        text = _user_text(msg)
        if text:
            prompts.append(text)
    return tuple(prompts)


def _session_hint(body: dict[str, Any]) -> str:
    # The CLI puts its session id into metadata.user_id (a JSON string); anything else is fine too.
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user_id if isinstance(user_id, str) else ""


def _latest_user_text_index(messages: list[dict[str, Any]]) -> int | None:
    fallback: int | None = None
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if msg.get("role") != "user" or _has_tool_result(msg):
            continue
        if _user_text(msg):
            return i
        # A user message carrying only system reminders is still better than nothing.
        if fallback is None:
            fallback = i
    return fallback


def _has_tool_result(msg: dict[str, Any]) -> bool:
    # Tool results can come with extra text blocks (reminders, hook output): such a message continues
    # the turn, it never starts a new one.
    content = msg.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _user_text(msg: dict[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        texts = [content]
    elif isinstance(content, list):
        texts = [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
    else:
        texts = []
    # After a failed turn the CLI keeps that turn's prompt and appends the next one to the same user
    # message as another text block, so the newest prompt is the last block, not the whole message.
    prompts = [t for t in texts if t.strip() and not t.lstrip().startswith(_SYSTEM_REMINDER)]
    return prompts[-1].strip() if prompts else ""


def _assistant_runs(messages: list[dict[str, Any]]) -> int:
    # Consecutive assistant messages are one model response split up (the CLI may or may not merge
    # them), so count runs; role="system" messages the CLI interleaves do not break a run.
    runs = 0
    previous: str | None = None
    for msg in messages:
        role = msg.get("role")
        if role == "system":
            continue
        if role == "assistant" and previous != "assistant":
            runs += 1
        previous = role
    return runs


@dataclass(frozen=True, slots=True)
class ScenarioSelector:
    """What the prompt asks for: an inline JSON script, a built-in name, or nothing (echo)."""

    inline: Any = None
    name: str | None = None


def select_scenario(prompt_text: str) -> ScenarioSelector:
    """Find ``[scenario]{json...}`` (JSON runs to the end of the text) or ``[scenario:NAME]``."""
    marker = prompt_text.find(SCENARIO_MARKER)
    if marker >= 0:
        raw = prompt_text[marker + len(SCENARIO_MARKER) :].strip()
        try:
            return ScenarioSelector(inline=json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"the text after {SCENARIO_MARKER} is not valid JSON: {exc}") from exc
    named = _NAMED_MARKER.search(prompt_text)
    if named:
        return ScenarioSelector(name=named.group(1))
    return ScenarioSelector()


def find_cwd(body: dict[str, Any]) -> str | None:
    for text in _system_texts(body):
        match = _CWD_LINE.search(text)
        if match:
            return match.group(1).strip()
    return None


def _system_texts(body: dict[str, Any]) -> list[str]:
    texts = _block_texts(body.get("system"))
    for msg in body.get("messages") or []:
        if isinstance(msg, dict) and msg.get("role") == "system":
            texts.extend(_block_texts(msg.get("content")))
    return texts


def _block_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return []


def structured_side_query_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of a tool-less structured-output request (the CLI's session-title call), if any.

    Such requests wrap the user's prompt (scenario marker included) in their own instructions, so they
    must never be run as the scenario: ``[scenario:error:529]`` would otherwise fail the title call too.
    """
    if body.get("tools"):
        return None
    output_config = body.get("output_config")
    if not isinstance(output_config, dict):
        return None
    fmt = output_config.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema: dict[str, Any] = fmt["schema"]
        return schema
    return None
