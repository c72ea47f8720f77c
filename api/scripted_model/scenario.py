"""Scenario model: what the scripted model answers, step by step, and how a JSON script is parsed.

A scenario is a list of steps; step *i* answers the *i*-th model request of a turn. Parsing is strict:
a typo in a test script must fail loudly (HTTP 400) rather than silently fall back to some default.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

StopReason = Literal["end_turn", "tool_use", "max_tokens"]
# How a stream can break other than with an API error: it stops sending (but stays open), or it sends
# bytes that are not a valid event.
StreamFault = Literal["stall", "malformed"]

_STOP_REASONS: frozenset[str] = frozenset({"end_turn", "tool_use", "max_tokens"})
_STREAM_FAULTS: frozenset[str] = frozenset({"stall", "malformed"})
_ERROR_STATUSES: frozenset[int] = frozenset({400, 401, 403, 404, 413, 429, 500, 529})

# The Anthropic API's error type for each HTTP status, used when a script gives only the status.
ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class ScenarioError(ValueError):
    """A scenario script or name that cannot be used; reported to the client as HTTP 400."""


@dataclass(frozen=True, slots=True)
class TextBlock:
    """A text content block."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    """A thinking content block; the signature is opaque to the CLI, any string will do."""

    thinking: str
    signature: str = "scripted-signature"


@dataclass(frozen=True, slots=True)
class ToolUseBlock:
    """A tool call; ``id`` is filled in deterministically when the script leaves it out."""

    name: str
    input: dict[str, Any]
    id: str | None = None


Block = TextBlock | ThinkingBlock | ToolUseBlock


@dataclass(frozen=True, slots=True)
class StepError:
    """An API error to answer with instead of content."""

    status: int
    type: str
    message: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts reported for a step; ``None`` means "estimate from the request or content"."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One model response."""

    content: tuple[Block, ...] = ()
    stop_reason: StopReason | None = None
    usage: Usage = field(default_factory=Usage)
    delay_ms: int = 0
    tokens_per_second: float | None = None
    error: StepError | None = None
    stream_error_after_ms: int | None = None
    stream_fault: StreamFault | None = None

    @property
    def effective_stop_reason(self) -> StopReason:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUseBlock) for b in self.content) else "end_turn"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named list of steps."""

    name: str
    steps: tuple[Step, ...]

    def step(self, index: int) -> Step:
        if index < len(self.steps):
            return self.steps[index]
        return FINISHED_STEP


# Answered once a scenario has run out of steps, so a CLI that asks again still ends its turn.
FINISHED_STEP = Step(content=(TextBlock("(scenario finished)"),), stop_reason="end_turn")


def tool_use_id(turn_key: str, step_index: int, block_index: int) -> str:
    """A ``toolu_`` id that is the same for a retried request and differs across turns and sessions."""
    digest = hashlib.sha256(f"{turn_key}/{step_index}/{block_index}".encode()).hexdigest()
    return f"toolu_scripted{digest[:20]}"


def error_step(status: int, message: str | None = None, error_type: str | None = None) -> Step:
    if status not in _ERROR_STATUSES:
        raise ScenarioError(f"unsupported error status {status}; use one of {sorted(_ERROR_STATUSES)}")
    return Step(
        error=StepError(
            status=status,
            type=error_type or ERROR_TYPE_BY_STATUS[status],
            message=message or f"scripted error {status}",
        )
    )


def parse_scenario(data: Any, name: str = "inline") -> Scenario:
    """Parse a ``{"steps": [...]}`` object into a :class:`Scenario`."""
    obj = _expect_dict(data, "scenario")
    _reject_unknown(obj, {"steps"}, "scenario")
    steps = obj.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioError("scenario.steps must be a non-empty list")
    return Scenario(name=name, steps=tuple(_parse_step(s, f"steps[{i}]") for i, s in enumerate(steps)))


def _parse_step(data: Any, where: str) -> Step:
    obj = _expect_dict(data, where)
    _reject_unknown(
        obj,
        {
            "content",
            "stop_reason",
            "usage",
            "delay_ms",
            "tokens_per_second",
            "error",
            "stream_error_after_ms",
            "stream_fault",
        },
        where,
    )
    content_raw = obj.get("content", [])
    if not isinstance(content_raw, list):
        raise ScenarioError(f"{where}.content must be a list")
    content = tuple(_parse_block(b, f"{where}.content[{i}]") for i, b in enumerate(content_raw))

    stop_reason = obj.get("stop_reason")
    if stop_reason is not None and stop_reason not in _STOP_REASONS:
        raise ScenarioError(f"{where}.stop_reason must be one of {sorted(_STOP_REASONS)}")

    usage_raw = _expect_dict(obj.get("usage", {}), f"{where}.usage")
    _reject_unknown(usage_raw, {"input_tokens", "output_tokens"}, f"{where}.usage")
    usage = Usage(
        input_tokens=_optional_int(usage_raw.get("input_tokens"), f"{where}.usage.input_tokens"),
        output_tokens=_optional_int(usage_raw.get("output_tokens"), f"{where}.usage.output_tokens"),
    )

    tps = obj.get("tokens_per_second")
    if tps is not None and (not isinstance(tps, int | float) or isinstance(tps, bool) or tps <= 0):
        raise ScenarioError(f"{where}.tokens_per_second must be a positive number")

    error = None
    if "error" in obj:
        err = _expect_dict(obj["error"], f"{where}.error")
        _reject_unknown(err, {"status", "type", "message"}, f"{where}.error")
        status = _optional_int(err.get("status", 529), f"{where}.error.status")
        assert status is not None
        error = error_step(status, _optional_str(err.get("message")), _optional_str(err.get("type"))).error

    fault = obj.get("stream_fault")
    if fault is not None and fault not in _STREAM_FAULTS:
        raise ScenarioError(f"{where}.stream_fault must be one of {sorted(_STREAM_FAULTS)}")

    if not content and error is None:
        raise ScenarioError(f"{where} needs content or an error")
    return Step(
        content=content,
        stop_reason=stop_reason,
        usage=usage,
        delay_ms=_optional_int(obj.get("delay_ms"), f"{where}.delay_ms") or 0,
        tokens_per_second=float(tps) if tps is not None else None,
        error=error,
        stream_error_after_ms=_optional_int(
            obj.get("stream_error_after_ms"), f"{where}.stream_error_after_ms"
        ),
        stream_fault=fault,
    )


def _parse_block(data: Any, where: str) -> Block:
    obj = _expect_dict(data, where)
    kind = obj.get("type")
    if kind == "text":
        _reject_unknown(obj, {"type", "text"}, where)
        return TextBlock(text=_required_str(obj, "text", where))
    if kind == "thinking":
        _reject_unknown(obj, {"type", "thinking", "signature"}, where)
        signature = _optional_str(obj.get("signature"))
        thinking = _required_str(obj, "thinking", where)
        return ThinkingBlock(thinking, signature) if signature else ThinkingBlock(thinking)
    if kind == "tool_use":
        _reject_unknown(obj, {"type", "name", "input", "id"}, where)
        return ToolUseBlock(
            name=_required_str(obj, "name", where),
            input=_expect_dict(obj.get("input", {}), f"{where}.input"),
            id=_optional_str(obj.get("id")),
        )
    raise ScenarioError(f"{where}.type must be 'text', 'thinking' or 'tool_use', not {kind!r}")


def _expect_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where} must be a JSON object")
    return value


def _reject_unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _required_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ScenarioError(f"{where}.{key} must be a string")
    return value


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ScenarioError(f"expected a string, got {value!r}")
    return value


def _optional_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ScenarioError(f"{where} must be a non-negative integer")
    return value
