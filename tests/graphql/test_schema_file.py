"""schema.graphql is what clients generate code from: it must equal the exported schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from graphql import GraphQLObjectType, Undefined, ast_from_value, print_ast

from graphql_schema.schema import build_schema, export_sdl

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


def signature(type_name: str, field_name: str) -> str:
    """A field's arguments and type on one line, as the contract writes them (descriptions left out)."""
    named = build_schema()._schema.get_type(type_name)
    assert isinstance(named, GraphQLObjectType), type_name
    field = named.fields[field_name]
    args = []
    for name, arg in field.args.items():
        default = ""
        if arg.default_value is not Undefined:
            value = ast_from_value(arg.default_value, arg.type)
            assert value is not None
            default = f" = {print_ast(value)}"
        args.append(f"{name}: {arg.type}{default}")
    return f"{field_name}({', '.join(args)}): {field.type}"


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
        "enum PermissionDecision",
        "enum PermissionRequestStatus",
        "union DecidePermissionResult = DecidePermissionSuccess |",
        "| PermissionRequested | PermissionDecided |",
        "input DecidePermissionInput",
        "permissionRequests(",
        "| HookFired",
    ):
        assert fragment in sdl, fragment
    assert signature("Subscription", "sessionEvents") == (
        "sessionEvents(sessionId: ID!, afterSeq: Int = 0, includePartialMessages: Boolean = false): "
        "SessionEvent!"
    )
    assert signature("Query", "events") == (
        "events(sessionId: ID!, afterSeq: Int = 0, first: Int = 100): [SessionEvent!]!"
    )
    assert signature("Mutation", "startRun") == "startRun(input: StartRunInput!): StartRunResult!"
    assert signature("Mutation", "interruptRun") == "interruptRun(runId: ID!): InterruptRunResult!"
