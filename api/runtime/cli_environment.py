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
        # The CLI's stream-idle watchdog (off by default; its code clamps the timeout to at least 300 s):
        # the operator's way to end a model stream that goes silent (docs/reliability.md).
        "CLAUDE_ENABLE_STREAM_WATCHDOG",
        "CLAUDE_STREAM_IDLE_TIMEOUT_MS",
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


# Never handed into a sandbox: the operator's credentials and where they are sent stay with the gateway.
GATEWAY_HELD = frozenset(
    {
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_UNIX_SOCKET",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_CODE_CLIENT_CERT",
        "CLAUDE_CODE_CLIENT_KEY",
        "CLAUDE_CODE_CLIENT_KEY_PASSPHRASE",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
    }
)


def is_passed(name: str) -> bool:
    return name in PASS_NAMES or name.startswith(PASS_PREFIXES)


def operator_environment(
    overrides: Mapping[str, str] | None = None, inherited: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allowlisted variables of the server (and the operator's overrides), non-empty ones only."""
    source = dict(os.environ if inherited is None else inherited)
    env = {name: value for name, value in source.items() if is_passed(name)}
    env.update(overrides or {})
    return {name: value for name, value in env.items() if value}


def sandboxed_environment(
    *,
    config_dir: Path,
    home: str,
    model_url: str,
    model_socket: str,
    model_pass: str,
    operator: Mapping[str, str],
    egress_url: str | None = None,
) -> dict[str, str]:
    """The whole environment of a sandboxed CLI: nothing of the server's but the allowlisted settings,
    and a gateway pass instead of the operator's key."""
    env = {name: value for name, value in operator.items() if name not in GATEWAY_HELD}
    env.update(FORCED)
    env.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "USER": "agent",
            "LOGNAME": "agent",
            "SHELL": "/bin/bash",
            "LANG": operator.get("LANG", "C.UTF-8"),
            "TMPDIR": "/tmp",
            "CLAUDE_CODE_TMPDIR": "/tmp",
            "CLAUDE_CONFIG_DIR": str(config_dir),
            "ANTHROPIC_BASE_URL": model_url,
            # The CLI sends its model API calls over this socket (the gateway's, bound in) instead of
            # TCP: no relay to start and wait for before it (api/sandbox/bubblewrap.py).
            "ANTHROPIC_UNIX_SOCKET": model_socket,
            "ANTHROPIC_API_KEY": model_pass,
        }
    )
    if egress_url is not None:
        # Tools reach allow-listed hosts through the egress proxy; the model goes over its socket.
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            env[name] = egress_url
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


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
