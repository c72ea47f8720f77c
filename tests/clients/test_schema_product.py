"""The schema as a product: typed by graphql-codegen for TypeScript clients, and diffed by graphql-inspector
against the last release's schema, so a breaking change is never an accident."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.clients.conftest import CLIENTS_DIR, REPO_ROOT, NodePackage

pytestmark = pytest.mark.timeout(600)

SCHEMA = REPO_ROOT / "schema.graphql"
BASELINES = REPO_ROOT / "docs" / "schema"
ACCEPT_RULE = CLIENTS_DIR / "accepted-breaking-changes.mjs"
OPERATIONS = ("StartRunMutation", "DecidePermissionMutation", "SessionEventsSubscription")
QUERIES = ("PendingPermissionsQuery", "SessionSummaryQuery")


def version_of(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def released_schema() -> Path:
    """The newest docs/schema/vX.Y.Z.graphql not newer than the version in pyproject.toml."""
    current = version_of(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])
    releases = {
        version_of(match.group(1)): path
        for path in BASELINES.glob("v*.graphql")
        if (match := re.fullmatch(r"v(\d+\.\d+\.\d+)\.graphql", path.name))
    }
    eligible = [version for version in releases if version <= current]
    assert eligible, f"no released schema in {BASELINES} for version {current} or older"
    return releases[max(eligible)]


async def codegen(node_package: NodePackage, out: Path, documents: Path | None = None) -> tuple[int, str]:
    env = {"CODEGEN_OUT": str(out)}
    if documents is not None:
        env["CODEGEN_DOCUMENTS"] = str(documents)
    result = await node_package.run("graphql-codegen", "--config", "codegen.cjs", env=env)
    return result.returncode, result.stdout + result.stderr


async def diff(
    node_package: NodePackage, old: Path, new: Path, accepted: Path | None = None
) -> tuple[int, str]:
    env = {"ACCEPTED_BREAKING_CHANGES": str(accepted)} if accepted is not None else {}
    result = await node_package.run(
        "graphql-inspector",
        "diff",
        str(old),
        str(new),
        "--rule",
        "suppressRemovalOfDeprecatedField",
        "--rule",
        str(ACCEPT_RULE),
        env=env,
    )
    return result.returncode, result.stdout + result.stderr


async def test_codegen_types_the_schema_and_the_clients_operations(
    node_package: NodePackage, tmp_path: Path
) -> None:
    code, output = await codegen(node_package, tmp_path)
    assert code == 0, output
    schema_types = (tmp_path / "schema.ts").read_text()
    operations = (tmp_path / "operations.ts").read_text()
    for name in ("Query", "Mutation", "Subscription", "SessionEventPayload", "PermissionRequest"):
        assert f"export type {name} =" in schema_types, name
    for name in (*OPERATIONS, *QUERIES):
        assert f"export type {name} =" in operations, name
    # What a TypeScript client compiles: both files pass tsc --strict.
    checked = await node_package.run(
        "tsc",
        "--noEmit",
        "--strict",
        "--target",
        "es2022",
        "--module",
        "esnext",
        "--moduleResolution",
        "bundler",
        str(tmp_path / "schema.ts"),
        str(tmp_path / "operations.ts"),
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_codegen_fails_on_an_operation_the_schema_does_not_serve(
    node_package: NodePackage, tmp_path: Path
) -> None:
    document = tmp_path / "stale.graphql"
    document.write_text('query Stale { session(id: "x") { id goneField } }\n')
    code, output = await codegen(node_package, tmp_path / "out", document)
    assert code != 0
    assert 'Cannot query field "goneField" on type "Session"' in output


def test_the_released_schema_is_kept_for_the_current_version() -> None:
    assert released_schema().name == "v0.1.0.graphql"


async def test_no_breaking_change_since_the_last_release(node_package: NodePackage) -> None:
    code, output = await diff(node_package, released_schema(), SCHEMA)
    assert code == 0, f"schema.graphql breaks clients of {released_schema().name}:\n{output}"
    assert "breaking change" not in output.replace("No breaking changes detected", "")


def without_query_session(tmp_path: Path) -> Path:
    text = SCHEMA.read_text()
    assert "\n  session(\n" in text
    broken = tmp_path / "broken.graphql"
    broken.write_text(text.replace("\n  session(\n", "\n  sessionRenamed(\n", 1))
    return broken


async def test_a_breaking_change_fails_unless_it_is_listed_as_deliberate(
    node_package: NodePackage, tmp_path: Path
) -> None:
    broken = without_query_session(tmp_path)
    message = "Field session was removed from object type Query"
    code, output = await diff(node_package, SCHEMA, broken)
    assert code == 1, output
    assert message in output
    assert "Detected 1 breaking change" in output

    accepted = tmp_path / "accepted.txt"
    accepted.write_text(f"# on purpose\n{message}\n")
    code, output = await diff(node_package, SCHEMA, broken, accepted)
    assert code == 0, output
    assert message in output
