"""The operator decides what callers may pre-approve and which modes they may pick, deployment-wide and per
tenant; asking for more is a PolicyViolationError that names the rule."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.errors import PolicyViolation
from api.runtime.policy import RunRequest, apply_policy
from api.runtime.tool_policy import PolicyBook
from api.scripted_model.server import ScriptedModelServer
from api.settings import Settings
from tests.conftest import Stack, start_stack
from tests.documents import start_run

POLICY = {
    "tenants": {
        "tenant-b": {
            "allowedTools": ["Read", "Bash(npm test:*)"],
            "permissionModes": ["DEFAULT"],
            "deniedTools": ["WebFetch"],
        }
    }
}


def book(tmp_path: Path, **settings: object) -> PolicyBook:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    return PolicyBook.from_settings(Settings(policy_file=policy, **settings))  # type: ignore[arg-type]


def test_a_tenant_may_pre_approve_only_what_its_rules_cover(tmp_path: Path) -> None:
    rules = book(tmp_path).for_tenant("tenant-b")
    rules.check_pre_approved(["Read", "Bash(npm test:*)"], "allowedTools")
    with pytest.raises(PolicyViolation) as refused:
        rules.check_pre_approved(["Bash"], "allowedTools")
    assert refused.value.rule == "tenant tenant-b.allowed_tools"
    assert "'Bash'" in refused.value.message


def test_tenant_rules_narrow_and_never_widen_the_deployments(tmp_path: Path) -> None:
    rules = book(tmp_path, tool_allowlist=["Bash(npm test:*)"]).for_tenant("tenant-b")
    with pytest.raises(PolicyViolation) as refused:
        rules.check_pre_approved(["Read"], "allowedTools")
    assert refused.value.rule == "deployment.allowed_tools"
    with pytest.raises(PolicyViolation) as mode:
        rules.check_mode("PLAN")
    assert mode.value.rule == "tenant tenant-b.permission_modes"
    # Other tenants get the deployment's rules alone.
    book(tmp_path).for_tenant("tenant-a").check_pre_approved(["Bash"], "allowedTools")


def test_denied_tools_are_denied_in_every_run(tmp_path: Path) -> None:
    settings = Settings(policy_file=tmp_path / "policy.json", tool_denylist=["NotebookEdit"])
    (tmp_path / "policy.json").write_text(json.dumps(POLICY))
    rules = PolicyBook.from_settings(settings).for_tenant("tenant-b")
    options = apply_policy(RunRequest(prompt="hi", disallowed_tools=["Write"]), settings, rules)
    assert options.disallowed_tools == ["Write", "NotebookEdit", "WebFetch"]


def test_a_broken_policy_file_stops_the_start_with_its_name(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"tenants": {"x": {"allowedTool": []}}}')
    with pytest.raises(ValueError, match="unknown keys"):
        PolicyBook.from_settings(Settings(policy_file=policy))


@pytest.fixture
async def policed_stack(tmp_path: Path, scripted_model: ScriptedModelServer) -> AsyncIterator[Stack]:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    running = await start_stack("embedded", tmp_path / "data", scripted_model, policy_file=policy)
    try:
        yield running
    finally:
        await running.api.stop()


async def test_the_api_answers_a_typed_error_naming_the_rule(policed_stack: Stack) -> None:
    async with policed_stack.client(policed_stack.other_key) as client:
        refused = await start_run(client, prompt="hi", allowedTools=["Bash"])
        mode = await start_run(client, prompt="hi", permissionMode="ACCEPT_EDITS")
        listed = await client.execute("{ sessions { edges { node { id } } } }")
    assert refused["__typename"] == "PolicyViolationError"
    assert refused["rule"] == "tenant tenant-b.allowed_tools"
    assert mode["rule"] == "tenant tenant-b.permission_modes"
    assert listed["sessions"]["edges"] == []
