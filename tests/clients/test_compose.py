"""docker-compose.yml without Docker: the Compose Specification's JSON schema, a linter, and the points
the deployment depends on, checked on the file as `docker compose` v2 would interpolate it.

There is no Docker engine (nor the compose plugin) on the build machine; the schema comes from the npm
package dclint, which bundles the compose-spec schema, and dclint itself lints the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from api.settings import Settings
from tests.clients.conftest import REPO_ROOT, NodePackage

pytestmark = pytest.mark.timeout(600)

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV = {"POSTGRES_PASSWORD": "pg-secret-1", "REDIS_PASSWORD": "redis-secret-2"}
# dclint's rules this file does not follow, on purpose.
NOT_FOLLOWED = {
    # `migrate` and the replicas share one image, built once and named, so `docker compose exec` and the
    # docs name the same thing.
    "no-build-and-image": "one named image for migrate and the replicas",
    # Ordering and quoting style: the file is ordered by what a reader needs first.
    "service-keys-order": "style",
    "services-alphabetical-order": "style",
    "top-level-properties-order": "style",
    "require-quotes-in-ports": "style (the ports are quoted; the rule wants one quote character)",
}
NOT_SETTINGS = {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}  # handed on to the agent CLI

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        present = env.get(name)
        empty = present is None or (operator is not None and operator.startswith(":") and present == "")
        if operator is not None and operator.endswith("?") and empty:
            raise MissingVariable(f"{name}: {argument}")
        if operator is not None and operator.endswith("-") and empty:
            return argument
        return present or ""

    return _VARIABLE.sub(substitute, value)


def compose_file(env: dict[str, str] = ENV) -> dict[str, Any]:
    """The file as compose sees it: YAML merge keys applied, variables interpolated."""
    raw = yaml.safe_load(COMPOSE.read_text())
    loaded: dict[str, Any] = interpolate(raw, env)
    return loaded


def compose_schema(node_package: NodePackage) -> dict[str, Any]:
    path = node_package.directory / "node_modules" / "dclint" / "schemas" / "compose.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def schema_errors(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def api_replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [])[:2] == ["claude-agent-api", "serve"]
    }


def volume_at(service: dict[str, Any], target: str) -> str | None:
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return source
    return None


def test_the_file_matches_the_compose_specification(node_package: NodePackage) -> None:
    assert schema_errors(compose_file(), compose_schema(node_package)) == []


def test_the_schema_check_catches_a_mistake(node_package: NodePackage) -> None:
    broken = compose_file()
    broken["services"]["api-1"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["redis"]["healthchek"] = broken["services"]["redis"].pop("healthcheck")
    errors = schema_errors(broken, compose_schema(node_package))
    assert any("service_finished" in error for error in errors), errors
    assert any("healthchek" in error for error in errors), errors


async def test_dclint_finds_nothing(node_package: NodePackage) -> None:
    disabled = [argument for rule in NOT_FOLLOWED for argument in ("--disable-rule", rule)]
    result = await node_package.run("dclint", str(COMPOSE), "-f", "json", "--color", "false", *disabled)
    report = json.loads(result.stdout)
    messages = [f"{m['rule']}: {m['message']}" for entry in report for m in entry["messages"]]
    assert messages == []
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_passwords() -> None:
    for missing in ENV:
        with pytest.raises(MissingVariable, match=missing):
            compose_file({name: value for name, value in ENV.items() if name != missing})


def test_postgres_and_redis_require_passwords_the_replicas_use() -> None:
    compose = compose_file()
    postgres, redis = compose["services"]["postgres"], compose["services"]["redis"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == ENV["POSTGRES_PASSWORD"]
    assert redis["environment"]["REDIS_PASSWORD"] == ENV["REDIS_PASSWORD"]
    # The password reaches redis-server on stdin, from the container's environment.
    assert "requirepass" in redis["command"][-1]
    assert '"$REDIS_PASSWORD"' in redis["command"][-1]
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name in [*api_replicas(compose), "migrate"]:
        environment = compose["services"][name]["environment"]
        assert f":{ENV['POSTGRES_PASSWORD']}@postgres:5432/" in environment["DATABASE_URL"], name
        assert environment["REDIS_URL"] == f"redis://:{ENV['REDIS_PASSWORD']}@redis:6379/0", name
    # No password is written into the file itself.
    text = COMPOSE.read_text()
    assert "POSTGRES_PASSWORD: postgres" not in text
    assert "postgres:postgres@" not in text


def test_two_replicas_share_data_dir_after_a_one_shot_migration() -> None:
    compose = compose_file()
    replicas = api_replicas(compose)
    assert len(replicas) >= 2
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["claude-agent-api", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    sources = set()
    for name, replica in replicas.items():
        environment = replica["environment"]
        data_dir = environment["DATA_DIR"]
        source = volume_at(replica, data_dir)
        assert source in compose["volumes"], f"{name}: DATA_DIR {data_dir} is not on a named volume"
        sources.add(source)
        assert replica["image"] == migrate["image"], name
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy", name
        # Every replica runs on the shared database and fan-out, never the embedded default.
        assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert environment["REDIS_URL"].startswith("redis://"), name
        assert environment["AUTO_MIGRATE"] == "false", name
        assert all(port.startswith("127.0.0.1:") for port in replica["ports"]), name
    assert len(sources) == 1, "the replicas must share one DATA_DIR volume"


def test_everything_long_lived_has_a_health_check() -> None:
    compose = compose_file()
    for name, service in compose["services"].items():
        if name == "migrate":
            continue
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
    for name, replica in api_replicas(compose).items():
        assert "/readyz" in " ".join(replica["healthcheck"]["test"]), name


def test_the_replicas_give_the_sandbox_what_it_needs() -> None:
    for name, replica in api_replicas(compose_file()).items():
        # bubblewrap needs unprivileged user namespaces (docs/security.md); an init reaps tool processes.
        assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(replica["security_opt"]), name
        assert replica["init"] is True, name
        assert replica["stop_grace_period"], name
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "bubblewrap" in dockerfile
    assert "socat" in dockerfile


def test_the_environment_names_only_real_settings() -> None:
    known = {name.upper() for name in Settings.model_fields} | NOT_SETTINGS
    for name, service in compose_file()["services"].items():
        if service.get("image", "").startswith("claude-agent-graphql-api"):
            assert set(service["environment"]) <= known, name


def test_the_compose_file_names_files_that_exist() -> None:
    compose = compose_file()
    contexts = {service["build"] for service in compose["services"].values() if "build" in service}
    assert contexts == {"."}
    assert (REPO_ROOT / "Dockerfile").exists()
    assert Path(REPO_ROOT / ".gitignore").read_text().count("\n.env\n") == 1
    # The passwords' .env and the tests' node_modules stay out of the image's build context.
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert {".env", "**/node_modules", ".venv"} <= set(ignored)
