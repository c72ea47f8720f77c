"""AgentSpec.connection_key reads the fields as they are: the same key as the deep copy
(`dataclasses.asdict`) it was once made from, for a spec with every option set and for a bare one."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from api.runtime.sdk_adapter import AgentSpec

BARE = AgentSpec(session_id="s", cwd="/w", resume=False, env={})
FULL = AgentSpec(
    session_id="s",
    cwd="/w",
    resume=True,
    env={"A": "b"},
    cli_path="/bin/launch",
    model="claude-sonnet-4-5",
    fallback_model="claude-haiku-4-5",
    system_prompt="be brief",
    system_prompt_preset={"append": "more"},
    thinking={"type": "enabled", "budget_tokens": 2048},
    effort="low",
    mcp_servers={"docs": {"type": "http", "url": "https://x", "headers": {"a": "b"}}},
    setting_sources=("project",),
    permission_mode="plan",
    allowed_tools=("Read", "Bash(npm test:*)"),
    disallowed_tools=("Write",),
    max_turns=3,
    max_budget_usd=0.5,
    output_schema={"type": "object", "properties": {"a": {"type": ["string", "null"]}}},
    agents={"r": {"description": "d", "prompt": "p", "tools": ["Read"], "model": None}},
    hook_events=("PreToolUse",),
    fork_from="parent",
    resume_at="uuid",
)


def _deep_copied_key(spec: AgentSpec) -> tuple[Any, ...]:
    values = dataclasses.asdict(spec)
    for name in ("resume", "env", "cli_path", "fork_from", "resume_at"):
        values.pop(name)
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


@pytest.mark.parametrize("spec", [BARE, FULL])
def test_the_key_is_the_deep_copys(spec: AgentSpec) -> None:
    assert spec.connection_key() == _deep_copied_key(spec)


def test_where_a_connection_starts_is_not_in_the_key() -> None:
    moved = dataclasses.replace(FULL, resume=False, env={}, cli_path=None, fork_from=None, resume_at=None)
    assert moved.connection_key() == FULL.connection_key()
    assert dataclasses.replace(FULL, max_turns=4).connection_key() != FULL.connection_key()
