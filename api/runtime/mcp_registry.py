"""The operator's registry of MCP servers: callers pick servers by name, never by command or URL.

Registry file (MCP_SERVERS_FILE), JSON, loaded and validated once at start:

    {"servers": {
        "files":  {"type": "stdio", "command": "/usr/bin/python3", "args": ["-m", "files_mcp"],
                   "env": {"LOG_LEVEL": "warning"}},
        "search": {"type": "http", "url": "https://mcp.example.com/mcp",
                   "headers": {"Authorization": "Bearer …"}}}}

A stdio server is started by the agent CLI, inside the agent's sandbox: its command must exist there
(under /usr, read-only), and whatever its `env` holds the agent can read. An http or sse server is reached
from inside the sandbox too, so its host must be in SANDBOX_EGRESS_HOSTS (docs/operations.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from api.errors import PolicyViolation, ValidationFailed

# The CLI names an MCP tool mcp__<server>__<tool>: a server name with "__" would make tool rules ambiguous.
_SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,62}$")
MAX_SERVERS_PER_RUN = 20


@dataclass(frozen=True)
class McpRegistry:
    """Every registered server's CLI config (the SDK's McpServerConfig shape), by name."""

    servers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def config_for(self, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """The CLI configs of servers a run chose; a name no longer registered is a PolicyViolation."""
        missing = [name for name in names if name not in self.servers]
        if missing:
            raise PolicyViolation(
                f"MCP server(s) {', '.join(missing)} are not registered on this server", rule="mcp_servers"
            )
        return {name: self.servers[name] for name in names}

    def check_names(self, names: list[str], allowed: tuple[str, ...] | None, layer: str) -> list[str]:
        """Validate a caller's choice: registered names, each allowed for the tenant, none twice."""
        if len(names) > MAX_SERVERS_PER_RUN:
            raise ValidationFailed(f"at most {MAX_SERVERS_PER_RUN} MCP servers", field="mcpServers")
        if len(set(names)) != len(names):
            raise ValidationFailed("an MCP server is named twice", field="mcpServers")
        unknown = [name for name in names if name not in self.servers]
        if unknown:
            registered = ", ".join(sorted(self.servers)) or "none"
            raise PolicyViolation(
                f"MCP server(s) {', '.join(unknown)} are not registered on this server "
                f"(registered: {registered})",
                rule="mcp_servers",
            )
        if allowed is not None:
            refused = [name for name in names if name not in allowed]
            if refused:
                raise PolicyViolation(
                    f"MCP server(s) {', '.join(refused)} are not allowed here ({layer} allows "
                    f"{', '.join(allowed) or 'none'})",
                    rule=f"{layer}.mcp_servers",
                )
        return list(names)

    @classmethod
    def load(cls, path: Path | None) -> McpRegistry:
        if path is None:
            return cls()
        where = f"MCP_SERVERS_FILE {path}"
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if not isinstance(data, dict) or set(data) - {"servers"}:
            raise ValueError(f'{where} must be an object with one key, "servers"')
        raw = data.get("servers") or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: servers must be an object (name → server)")
        return cls({name: _server(name, value, f"{where}: servers.{name}") for name, value in raw.items()})


def _server(name: str, raw: object, where: str) -> dict[str, Any]:
    if not _SERVER_NAME.match(name):
        raise ValueError(f"{where}: a name is letters, digits, - and single _, up to 63 characters")
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    kind = raw.get("type", "stdio")
    if kind == "stdio":
        _only(raw, {"type", "command", "args", "env"}, where)
        command = raw.get("command")
        if not isinstance(command, str) or not command:
            raise ValueError(f"{where}.command must be a non-empty string")
        config: dict[str, Any] = {"type": "stdio", "command": command}
        if "args" in raw:
            config["args"] = _strings(raw["args"], f"{where}.args")
        if "env" in raw:
            config["env"] = _string_map(raw["env"], f"{where}.env")
        return config
    if kind in ("http", "sse"):
        _only(raw, {"type", "url", "headers"}, where)
        url = raw.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{where}.url must be an http(s) URL")
        config = {"type": kind, "url": url}
        if "headers" in raw:
            config["headers"] = _string_map(raw["headers"], f"{where}.headers")
        return config
    raise ValueError(f"{where}.type must be stdio, http or sse, not {kind!r}")


def _only(raw: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = set(raw) - keys
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where} must be a list of strings")
    return list(value)


def _string_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise ValueError(f"{where} must be an object of strings")
    return dict(value)
