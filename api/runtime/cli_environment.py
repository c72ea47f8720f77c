"""The environment the agent CLI (and its Bash tool) gets: a curated one, never the server's.

The SDK merges `options.env` over the server's whole `os.environ`. Rather than mutate the server's own
environment, every inherited variable outside the allowlist is overridden with an empty value, so
DATABASE_URL, REDIS_URL and any other secret of the server never reach the agent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Handed through as they are (docs/api.md's process interface: ANTHROPIC_* and CLAUDE_CODE_*), plus what a
# process needs to run.
PASS_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "LC_")
PASS_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "USER",
        "LOGNAME",
        "SHELL",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
        "API_TIMEOUT_MS",
        "BASH_DEFAULT_TIMEOUT_MS",
        "BASH_MAX_TIMEOUT_MS",
        "MCP_TIMEOUT",
        "MCP_TOOL_TIMEOUT",
        "MAX_THINKING_TOKENS",
        "DISABLE_PROMPT_CACHING",
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
        "DISABLE_ERROR_REPORTING",
        "IS_SANDBOX",
    }
)

# Set for every CLI the service starts: a server process has no one to show update prompts or surveys to.
FORCED = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


def is_passed(name: str) -> bool:
    return name in PASS_NAMES or name.startswith(PASS_PREFIXES)


def agent_environment(
    *,
    config_dir: Path,
    tmp_dir: Path,
    overrides: Mapping[str, str] | None = None,
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`options.env` for one CLI: allowlisted values kept, everything else of the server blanked."""
    source = dict(os.environ if inherited is None else inherited)
    env = {name: ("" if not is_passed(name) else value) for name, value in source.items()}
    env.update(FORCED)
    env.update(overrides or {})
    env["CLAUDE_CONFIG_DIR"] = str(config_dir)
    env["CLAUDE_CODE_TMPDIR"] = str(tmp_dir)
    env["TMPDIR"] = str(tmp_dir)
    return env
