"""schema.graphql is what clients generate code from: it must equal the exported schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from graphql_schema.schema import export_sdl

ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_equals_the_exported_schema() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    stale = "schema.graphql is stale: run `claude-agent-api export-schema > schema.graphql`"
    assert committed == export_sdl(), stale


def test_the_export_schema_command_prints_it() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "api.cli", "export-schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == (ROOT / "schema.graphql").read_text()


def test_every_type_and_field_of_the_contract_core_is_there() -> None:
    sdl = export_sdl()
    for fragment in (
        "enum RunStatus",
        "enum PermissionMode",
        "enum BusyPolicy",
        "union StartRunResult = StartRunSuccess | ValidationError | NotFoundError | SessionBusyError",
        "union SessionEventPayload = AssistantMessage | UserMessage | SystemMessage | ResultMessage",
        "union ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock",
        "interface Error",
        "sessionEvents(sessionId: ID!, afterSeq: Int = 0, includePartialMessages: Boolean = false)",
        "events(sessionId: ID!, afterSeq: Int = 0, first: Int = 100): [SessionEvent!]!",
        "startRun(input: StartRunInput!): StartRunResult!",
        "interruptRun(runId: ID!): InterruptRunResult!",
        "enum PermissionDecision",
        "enum PermissionRequestStatus",
        "union DecidePermissionResult = DecidePermissionSuccess |",
        "| PermissionRequested | PermissionDecided |",
        "input DecidePermissionInput",
        "permissionRequests(",
    ):
        assert fragment in sdl, fragment
