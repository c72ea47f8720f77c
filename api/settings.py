"""The server's settings: one validated object, read from the environment, nothing connects here."""

from __future__ import annotations

import os
import socket
import uuid
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from api.runtime.agent_budget import agents_within, default_budget_mb

# One agent CLI while it streams (measured: about 170 MB RSS connected and unused, 190-213 MB idle after a
# turn, up to 280 MB while streaming; its sandbox adds ~10 MB).
AGENT_CLI_MB = 300


class WarmPoolProfile(BaseModel):
    """An operator-defined run profile with a warm pool of its own (WARM_POOL_PROFILES): a startRun for a
    new session whose options, after policy, equal the profile's takes one of its CLIs."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=1, le=100, description="Pooled CLIs per replica for this profile.")
    model: str | None = None
    system_prompt: str | None = None
    permission_mode: str | None = Field(default=None, description="A PermissionMode, e.g. ACCEPT_EDITS.")
    allowed_tools: list[str] | None = None
    disallowed_tools: list[str] | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None


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
    control_legacy_channel: bool = Field(
        default=True,
        description="Also reach replicas of releases before the control channel was named after the "
        "deployment, through the shared `control:runs` (a rolling upgrade); off once none runs.",
    )
    data_dir: Path = Field(default=Path("./var"), description="Workspaces and agent state.")
    session_store: Literal["files", "database"] = Field(
        default="files",
        description="Where agent transcripts are kept: files (only under DATA_DIR, which replicas must "
        "share) or database (also mirrored to the database, so any replica resumes a session; file "
        "checkpoints and rewindFiles are then off).",
    )

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
        description="Agent CLIs (running, idle or warm) this replica keeps at once; beyond it a warm one, "
        "then the least recently used idle one is stopped, and runs wait QUEUED when none is idle. "
        "Default: AGENT_MEMORY_BUDGET_MB / AGENT_CLI_MB.",
    )
    agent_memory_budget_mb: int | None = Field(
        default=None,
        ge=1,
        description="Memory this replica's agent CLIs may take together (running, idle and warm); it sets "
        "the number of live CLIs unless MAX_LIVE_AGENTS does. Default: half the memory of the machine, or "
        "of this process's cgroup when it has a lower limit.",
    )
    agent_cli_mb: int = Field(
        default=AGENT_CLI_MB,
        ge=16,
        description="What one agent CLI is reckoned to take against the memory budget, its sandbox included.",
    )
    max_queued_runs_per_tenant: int = Field(
        default=50,
        ge=0,
        description="A tenant's runs waiting QUEUED at once (all replicas); beyond it startRun answers "
        "RateLimitedError. 0: no bound.",
    )
    warm_pool_size: int = Field(
        default=0,
        ge=0,
        description="Connected agent CLIs this replica keeps ready for new sessions on the default run "
        "options, shared among the warm tenants; 0 = none. They count against the memory budget.",
    )
    warm_pool_profiles: dict[str, WarmPoolProfile] = Field(
        default_factory=dict,
        description="Operator-defined run profiles with pools of their own, by name (JSON object: "
        '{"editor": {"size": 1, "permission_mode": "ACCEPT_EDITS", "max_turns": 20}}); each holds `size` '
        "CLIs per replica beside WARM_POOL_SIZE's, for the same warm tenants.",
    )
    warm_pool_tenants: list[str] = Field(
        default_factory=list,
        description="Tenants (by name) whose pool is kept filled from the start; JSON list. Other tenants "
        "get pooled CLIs while they start new sessions here (WARM_POOL_RECENT_SECONDS).",
    )
    warm_pool_recent_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A tenant that started a new session on this replica within this long is kept warm.",
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
    policy_file: Path | None = Field(
        default=None, description="Per-tenant tool rules (JSON, narrower) and budgets."
    )
    max_turns_cap: int = Field(default=100, ge=1)
    mcp_servers_file: Path | None = Field(
        default=None,
        description="The registry of MCP servers (JSON) callers may choose by name with mcpServers; "
        "unset: none.",
    )
    agent_setting_sources: list[Literal["user", "project", "local"]] = Field(
        default_factory=list,
        description="Claude Code settings files every agent CLI loads (user: the session's config dir, "
        "project and local: its workspace, CLAUDE.md with project). Empty: none. JSON list.",
    )
    # Budgets (api/control/budgets.py); POLICY_FILE may set other figures per tenant.
    max_run_budget_usd: float | None = Field(
        default=None, gt=0, description="The largest maxBudgetUsd a caller may ask for; unset: no cap."
    )
    default_run_budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="The maxBudgetUsd of runs that ask for none; unset: MAX_RUN_BUDGET_USD (or no limit).",
    )
    tenant_daily_budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="What a tenant's runs may cost per UTC day; once spent, startRun is refused until "
        "midnight UTC. Unset: no daily budget.",
    )

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
    lease_seconds: float = Field(
        default=6.0,
        gt=1,
        description="A session's lease on the replica running its CLI, in the database's clock; a replica "
        "that dies frees its sessions after at most this.",
    )
    lease_renew_seconds: float = Field(
        default=2.0, gt=0, description="How often a replica renews its leases (less than half LEASE_SECONDS)."
    )
    orphan_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often a replica looks for runs whose replica lost the lease."
    )
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
        description="Accept permessage-deflate when a client offers it.",
    )
    ws_shared_compression: bool = Field(
        default=True,
        description="Compress each message alone, so a frame many watchers receive is compressed once per "
        "replica; false keeps a compression context per socket (fewer bytes, a compression per socket).",
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

    @model_validator(mode="after")
    def _renewal_fits_the_lease(self) -> Settings:
        # One renewal may fail and the next still lands in time; past that the holder stops its CLIs.
        if self.lease_renew_seconds * 2 >= self.lease_seconds:
            raise ValueError("LEASE_RENEW_SECONDS must be less than half of LEASE_SECONDS")
        return self

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
    def effective_agent_memory_budget_mb(self) -> int:
        if self.agent_memory_budget_mb is not None:
            return self.agent_memory_budget_mb
        return default_budget_mb()

    @cached_property
    def effective_max_live_agents(self) -> int:
        if self.max_live_agents is not None:
            return self.max_live_agents
        return agents_within(self.effective_agent_memory_budget_mb, self.agent_cli_mb)

    @property
    def is_embedded(self) -> bool:
        return self.database_url is None and self.redis_url is None

    @property
    def tenants_dir(self) -> Path:
        """Workspaces and agent state, one folder per tenant and per session (api/sandbox/layout.py)."""
        return (self.data_dir / "tenants").resolve()
