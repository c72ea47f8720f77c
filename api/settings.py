"""The server's settings: one validated object, read from the environment, nothing connects here."""

from __future__ import annotations

import os
import socket
import uuid
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

# One agent CLI while it streams (measured: about 190 MB RSS idle, up to 280 MB; its sandbox adds ~10 MB).
AGENT_CLI_MB = 300


def _memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 4096


class Settings(BaseSettings):
    """Every knob of the service (all listed in docs/operations.md); names follow docs/api.md."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: str | None = Field(
        default=None,
        description="postgresql+asyncpg://… or sqlite+aiosqlite:///…; unset means SQLite under DATA_DIR.",
    )
    redis_url: str | None = Field(
        default=None, description="redis://…; unset means in-process fan-out (one replica)."
    )
    data_dir: Path = Field(default=Path("./var"), description="Workspaces and agent state.")

    # Logging: console for a developer's terminal, JSON everywhere else.
    log_format: str = Field(default="auto", description="console, json or auto (console on a TTY).")
    log_level: str = "INFO"

    # Runtime limits.
    max_concurrent_runs: int = Field(
        default=4, ge=1, description="Runs that may execute at once per replica."
    )
    max_prompt_chars: int = Field(default=100_000, ge=1)
    max_request_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="Larger HTTP bodies get 413."
    )
    max_live_agents: int | None = Field(
        default=None,
        ge=1,
        description="Agent CLIs (running or idle) this replica keeps at once; beyond it the least recently "
        "used idle one is stopped, and runs wait QUEUED when none is idle. Default: half the machine's "
        f"memory at {AGENT_CLI_MB} MB each.",
    )
    idle_client_seconds: float = Field(
        default=300.0, gt=0, description="A live CLI client idle this long is disconnected; resume is by id."
    )
    run_timeout_seconds: float = Field(default=3600.0, gt=0)
    default_model: str | None = None
    # The operator's tool policy (api/runtime/tool_policy.py); POLICY_FILE narrows it per tenant.
    allowed_permission_modes: list[str] = Field(
        default=["DEFAULT", "ACCEPT_EDITS", "PLAN"], description="Permission modes callers may choose."
    )
    tool_allowlist: list[str] | None = Field(
        default=None,
        description="Tools (or rules such as Bash(npm test:*)) callers may pre-approve with allowedTools; "
        "unset: any. JSON list.",
    )
    tool_denylist: list[str] = Field(
        default_factory=list, description="Tools denied in every run, whatever the caller asks. JSON list."
    )
    policy_file: Path | None = Field(default=None, description="Per-tenant tool rules (JSON), narrower.")
    max_turns_cap: int = Field(default=100, ge=1)

    # Confinement of agent CLIs (docs/security.md).
    sandbox: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: every agent CLI runs in a bubblewrap sandbox, and runs are refused where it "
        "cannot work; off: agents run unconfined (an explicit operator choice, warned at every start).",
    )
    sandbox_bwrap: str = Field(default="bwrap", description="bubblewrap: a name on PATH or a path.")
    sandbox_egress_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts tools in a sandbox may reach over https (host, *.domain or host:port; JSON "
        "list). Empty: none. Names must resolve to public addresses unless the address itself is listed.",
    )
    sandbox_tmp_mb: int = Field(default=512, ge=16, description="Size of each sandbox's private /tmp.")
    runtime_dir: Path | None = Field(
        default=None,
        description="This replica's private folder for sockets and launchers; default: a new folder in "
        "the system's temporary directory. Never inside DATA_DIR's sandboxes.",
    )

    execute_runs: bool = Field(
        default=True,
        description="False: serve the API but leave runs to other replicas (draining, API-only).",
    )

    # Human in the loop.
    permission_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        # The longest wait measured to be honoured by the CLI (900 s, SDK 0.2.188): no longer is allowed.
        le=900,
        description="A permission request nobody decides within this is EXPIRED and the tool is denied.",
    )
    interrupt_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        le=120,
        description="How long interruptRun waits for the run to settle before answering: a CLI gets 15 s "
        "to stop, then the SDK takes up to 10 s to end its process (stdin EOF, SIGTERM, SIGKILL).",
    )

    # Rate limits and quotas (api/limits/); 0 turns one off. Shared through Redis when REDIS_URL is set.
    rate_limit_requests_per_second: int = Field(
        default=50, ge=0, description="HTTP requests per second per API key (bursts of as many); then 429."
    )
    rate_limit_runs_per_minute_per_key: int = Field(
        default=60, ge=0, description="startRun calls per minute per API key; then RateLimitedError."
    )
    rate_limit_runs_per_minute_per_tenant: int = Field(
        default=300, ge=0, description="startRun calls per minute per tenant, all its keys together."
    )
    max_active_runs_per_tenant: int = Field(
        default=100, ge=0, description="A tenant's runs QUEUED or RUNNING at once; more is RateLimitedError."
    )

    # Read path caches; 0 turns one off (the benchmark compares both).
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified API key is trusted without asking the database; a revoked key "
        "is refused within this.",
    )
    graphql_document_cache_size: int = Field(
        default=1000, ge=0, description="Parsed and validated GraphQL documents kept, by their text."
    )

    # Leases: a session runs on one replica at a time (docs/architecture.md, decision 4).
    lease_seconds: float = Field(default=30.0, gt=1)
    dispatch_poll_seconds: float = Field(default=2.0, gt=0)

    # Fan-out and subscriptions.
    watcher_queue_size: int = Field(default=1000, ge=10)
    catchup_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often a live subscription checks the log for missed events."
    )
    replay_page_size: int = Field(default=500, ge=1)
    shared_subscription_results: bool = Field(
        default=True,
        description="Execute and encode each subscription event once per document, not once per subscriber.",
    )

    # GraphQL transport.
    connection_init_timeout_seconds: float = 5.0
    # graphql-transport-ws in Strawberry never pings; WebSocket ping frames find dead peers instead.
    ws_ping_interval_seconds: float = Field(default=20.0, gt=0)
    ws_ping_timeout_seconds: float = Field(default=20.0, gt=0)
    ws_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    ws_per_message_deflate: bool = Field(
        default=True,
        description="Offer permessage-deflate (compressed per socket: with many watchers it costs CPU).",
    )
    ws_auth_recheck_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often open WebSockets' keys are re-checked; revoked ones close 4403.",
    )
    max_query_depth: int = 12
    max_aliases: int = 20
    max_tokens: int = 5000
    allowed_origins: list[str] = Field(default_factory=list)
    graphiql: bool = True
    console: bool = Field(default=True, description="Serve the operator console at GET /console.")
    web_assets_dir: Path | None = Field(
        default=None,
        description="The npm-built files GraphiQL and the console load (scripts/web-assets copies them); "
        "default: api/web/vendor next to the code.",
    )

    auto_migrate: bool | None = Field(
        default=None, description="Apply migrations on start; default: yes on SQLite, no on PostgreSQL."
    )

    # Webhooks (hook events delivered over HTTP).
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts or IPs (optionally host:port) a webhook may reach although they are loopback, "
        "private, link-local, multicast or unspecified; everything else of that kind is refused.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long one webhook call may take, connect to answer."
    )

    # The built-in scripted model (serve --scripted-model sets it).
    scripted_model: bool = False

    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in {"auto", "console", "json"}:
            raise ValueError("log_format must be auto, console or json")
        return value

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'claude-agent-api.sqlite3').resolve()}"

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file (absolute) when the database is one; None for PostgreSQL or in-memory."""
        url = make_url(self.effective_database_url)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return Path(url.database).resolve()

    @property
    def migrate_on_start(self) -> bool:
        """AUTO_MIGRATE when set; otherwise yes on SQLite (one process), no on PostgreSQL (`migrate`)."""
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.effective_database_url.startswith("sqlite")

    @cached_property
    def effective_max_live_agents(self) -> int:
        if self.max_live_agents is not None:
            return self.max_live_agents
        return max(self.max_concurrent_runs, _memory_mb() // 2 // AGENT_CLI_MB)

    @property
    def is_embedded(self) -> bool:
        return self.database_url is None and self.redis_url is None

    @property
    def tenants_dir(self) -> Path:
        """Workspaces and agent state, one folder per tenant and per session (api/sandbox/layout.py)."""
        return (self.data_dir / "tenants").resolve()
