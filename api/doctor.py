"""`claude-agent-api doctor`: one line per thing the server needs, saying what is wrong and how to fix it.

Nothing here changes the machine: no database or directory is created, nothing is migrated. The checks
read the same settings as `serve`, so run it with the server's environment.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx

from api.settings import Settings

DEFAULT_MODEL_URL = "https://api.anthropic.com"
MODEL_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
CLOUD_PROVIDERS = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
TIMEOUT_SECONDS = 10.0


class Status(StrEnum):
    OK = "ok"
    SKIP = "skip"  # not used in this configuration
    WARN = "warn"  # wrong, but this configuration does not need it
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    status: Status
    detail: str
    fix: str | None = None

    def line(self, name: str) -> str:
        text = f"{self.status.value:<5}{name:<12}{self.detail}"
        return f"{text}\n{'':<17}fix: {self.fix}" if self.fix else text


def cli_command() -> str:
    """This CLI as a command that works from any directory: on PATH, the venv's script, or python -m."""
    script = Path(sys.executable).parent / "claude-agent-api"
    on_path = shutil.which("claude-agent-api")
    if on_path and script.is_file() and Path(on_path).resolve() == script.resolve():
        return "claude-agent-api"
    if script.is_file():
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(sys.executable)} -m api.cli"


def database_env(settings: Settings) -> str:
    """The variable assignment another shell needs to reach this server's database ("" when not printable)."""
    if settings.database_url is None:
        return f"DATA_DIR={shlex.quote(str(settings.data_dir.resolve()))} "
    if settings.sqlite_file is not None:
        from sqlalchemy.engine import make_url

        url = make_url(settings.database_url).set(database=str(settings.sqlite_file))
        return f"DATABASE_URL={shlex.quote(url.render_as_string(hide_password=False))} "
    return ""  # PostgreSQL: the URL holds a password; never print it


def missing_database(settings: Settings) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) when the SQLite database file does not exist; None otherwise.

    Operator commands never create a SQLite file: run from the wrong directory, they would otherwise make a
    new, empty database there and act on it.
    """
    path = settings.sqlite_file
    if path is None or path.is_file():
        return None
    if settings.database_url is not None:
        where = f"DATABASE_URL names {path}"
    elif settings.data_dir.is_absolute():
        where = f"DATA_DIR is {settings.data_dir}"
    else:
        where = f"DATA_DIR is {settings.data_dir}, relative to the current directory {Path.cwd()}"
    return (
        f"no database at {path} ({where})",
        "point DATA_DIR at the server's data directory (`serve` prints its database path), e.g. "
        f"`DATA_DIR=/path/to/var {cli_command()} keys list`, or DATABASE_URL at its database; "
        f"to start a new database there, run `{cli_command()} migrate` or start the server",
    )


def check_agent_cli() -> Finding:
    path = _agent_cli_path()
    if path is None:
        return Finding(
            Status.FAIL,
            "the Claude Agent SDK's bundled CLI is missing and no `claude` is on PATH",
            "reinstall the project (scripts/bootstrap, or pip install -e .): the SDK's wheel for this "
            "platform bundles the CLI; or put Claude Code's `claude` on PATH",
        )
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding(Status.FAIL, f"{path} does not start: {exc}", "reinstall the project")
    if done.returncode != 0:
        return Finding(
            Status.FAIL,
            f"{path} --version exited with {done.returncode}: {_first_line(done.stderr or done.stdout)}",
            "reinstall the project; check that the binary matches this machine's architecture",
        )
    return Finding(Status.OK, f"{path} ({done.stdout.strip()})")


def _agent_cli_path() -> Path | None:
    """What the SDK starts: the CLI bundled in its package, else `claude` on PATH."""
    spec = importlib.util.find_spec("claude_agent_sdk")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location) / "_bundled" / "claude"
        if bundled.is_file():
            return bundled
    found = shutil.which("claude")
    return Path(found) if found else None


async def check_sandbox(settings: Settings) -> Finding:
    """The same probe the server runs at start: a sandbox exactly as an agent would get it."""
    from api.sandbox.launcher import AgentLauncher

    # SANDBOX=off is an explicit operator choice: then a broken sandbox is worth knowing, not an error.
    bad = Status.WARN if settings.sandbox == "off" else Status.FAIL
    problem = await AgentLauncher(settings).check()
    if problem is not None:
        return Finding(bad, f"agents cannot be sandboxed: {problem.reason}", problem.fix)
    return Finding(
        Status.OK, "bubblewrap confines an agent: uid 1000, own PID and network namespaces, read-only root"
    )


async def check_database(settings: Settings) -> Finding:
    from sqlalchemy.engine import make_url

    from persistence.migrations import current_revision, head_revision

    missing = missing_database(settings)
    if missing is not None:
        return Finding(Status.FAIL, *missing)
    url = settings.effective_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        current = await asyncio.wait_for(current_revision(url), TIMEOUT_SECONDS)
    except Exception as exc:  # any failure to connect is the finding
        return Finding(
            Status.FAIL,
            f"cannot read {shown}: {_first_line(str(exc)) or type(exc).__name__}",
            "check DATABASE_URL (host, port, user, password, database) and that PostgreSQL is running",
        )
    head = head_revision(url)
    if current != head:
        return Finding(
            Status.FAIL,
            f"{shown} is at migration {current or '(none)'}; this version needs {head}",
            f"run `{cli_command()} migrate` with the server's environment (or AUTO_MIGRATE=true)",
        )
    return Finding(Status.OK, f"{shown} (migration {head})")


async def check_redis(settings: Settings) -> Finding:
    if not settings.redis_url:
        return Finding(Status.SKIP, "REDIS_URL unset: in-process fan-out, which serves one replica only")
    from redis import asyncio as aioredis
    from sqlalchemy.engine import make_url

    shown = make_url(settings.redis_url).render_as_string(hide_password=True)
    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=TIMEOUT_SECONDS)
    try:
        await asyncio.wait_for(client.ping(), TIMEOUT_SECONDS)
    except Exception as exc:  # any failure to reach it is the finding
        return Finding(
            Status.FAIL,
            f"cannot reach {shown}: {_first_line(str(exc)) or type(exc).__name__}",
            "check REDIS_URL and that Redis is running; unset REDIS_URL to run a single replica without it",
        )
    finally:
        await client.aclose()
    return Finding(Status.OK, f"{shown} answers PING")


def check_data_dir(settings: Settings) -> Finding:
    path = settings.data_dir.resolve()
    relative = (
        "" if settings.data_dir.is_absolute() else f" (DATA_DIR={settings.data_dir}, from {Path.cwd()})"
    )
    if path.exists():
        if not path.is_dir():
            return Finding(
                Status.FAIL, f"{path} is not a directory{relative}", "point DATA_DIR at a directory"
            )
        try:
            # Writing is the only reliable test (root passes access(), read-only mounts do not).
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            return Finding(
                Status.FAIL,
                f"{path} is not writable by uid {os.getuid()}: {exc.strerror}{relative}",
                "chown or chmod it for the server's user, or point DATA_DIR elsewhere",
            )
        return Finding(Status.OK, f"{path} is writable{relative}")
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Finding(
            Status.FAIL,
            f"{path} does not exist and cannot be created under {parent}{relative}",
            "create it for the server's user, or point DATA_DIR at a writable directory",
        )
    return Finding(Status.OK, f"{path} does not exist yet; the server will create it{relative}")


async def check_model(*, scripted_model: bool) -> Finding:
    if scripted_model:
        return Finding(Status.SKIP, "--scripted-model: the built-in scripted model needs no endpoint or key")
    cloud = [name for name in CLOUD_PROVIDERS if os.environ.get(name, "").strip() not in ("", "0", "false")]
    if cloud:
        return Finding(Status.SKIP, f"{cloud[0]} is set: the cloud provider's credentials are not checked")
    base_url = os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_MODEL_URL
    problems: list[str] = []
    fixes: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
            response = await http.get(base_url)
        reached = f"reachable (HTTP {response.status_code})"
    except httpx.HTTPError as exc:
        problems.append(f"cannot reach {base_url}: {_first_line(str(exc)) or type(exc).__name__}")
        fixes.append("check ANTHROPIC_BASE_URL, the network, and HTTPS_PROXY if the server needs a proxy")
    if not any(os.environ.get(name) for name in MODEL_KEYS):
        problems.append("no ANTHROPIC_API_KEY (nor ANTHROPIC_AUTH_TOKEN) in the environment")
        fixes.append("set ANTHROPIC_API_KEY for the server, or try it with `serve --scripted-model`")
    if problems:
        return Finding(Status.FAIL, "; ".join(problems), "; ".join(fixes))
    return Finding(Status.OK, f"{base_url} {reached}, key present")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


async def run(settings: Settings, *, scripted_model: bool = False) -> int:
    """Prints one line per check (and how to fix what is wrong); 1 when anything failed, else 0."""
    checks: list[tuple[str, Callable[[], Awaitable[Finding]]]] = [
        ("agent CLI", lambda: asyncio.to_thread(check_agent_cli)),
        ("bubblewrap", lambda: check_sandbox(settings)),
        ("database", lambda: check_database(settings)),
        ("redis", lambda: check_redis(settings)),
        ("data dir", lambda: asyncio.to_thread(check_data_dir, settings)),
        ("model", lambda: check_model(scripted_model=scripted_model)),
    ]
    failed = 0
    for name, check in checks:
        finding = await check()
        failed += finding.status is Status.FAIL
        print(finding.line(name), flush=True)
    print("all checks passed" if not failed else f"{failed} check(s) failed", flush=True)
    return 1 if failed else 0
