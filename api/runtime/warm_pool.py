"""The warm pool: agent CLIs started and connected before anyone asks, so a new session's first run
skips the CLI's start (docs/architecture.md, "The warm pool").

A sandbox binds its session's own folders at the same paths inside and out (api/sandbox/layout.py), so a
CLI cannot be started for "some session" and pointed at one later. Each pooled CLI is therefore started
for a session id chosen in advance, in that session's own new (empty) folders under its tenant, with the
tenant's default run options; `startRun` creating a session for that tenant with those options takes a
pooled CLI and gives the new session its id. Nothing is shared between pooled CLIs but the binary: each
has its own sandbox, folders and CLAUDE_CONFIG_DIR, and a CLI that served one session is never pooled
again (its session keeps it, as any session does, until it is idle too long or evicted).

The pool is per replica, WARM_POOL_SIZE CLIs at most, spread over the warm tenants: those named in
WARM_POOL_TENANTS and those that started a new session here within WARM_POOL_RECENT_SECONDS. Pooled CLIs
count against the memory budget; the pool fills only into free room, and a run that needs room stops a
pooled CLI before an idle session's. A pooled CLI's model pass stays shut until one of its session's runs
executes, so it cannot reach the model before it has a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from api.errors import ServiceError
from api.runtime import metrics
from api.runtime.policy import RunOptions, RunRequest, apply_policy
from api.runtime.sdk_adapter import (
    AgentConnection,
    HookProvider,
    ToolPermissionAnswer,
    ToolPermissionAsk,
)
from api.runtime.session_actor import HOOK_TIMEOUT_MARGIN_SECONDS, agent_spec
from api.runtime.tool_policy import PolicyBook
from api.sandbox.layout import SessionPaths, remove_tree
from persistence.repositories.tenants import TenantRepository

if TYPE_CHECKING:
    from api.runtime.run_manager import RunManager
    from api.runtime.session_actor import SessionActor
    from api.sandbox.launcher import Launch
    from api.settings import Settings

log = structlog.get_logger(__name__)

# Without a wake-up the pool still looks at its tenants this often (recent tenants cool down by time).
REFILL_INTERVAL_SECONDS = 5.0
# After a CLI failed to start, the pool waits this long before it tries again (not a tight crash loop).
FAILURE_BACKOFF_SECONDS = 30.0
# After a pooled CLI is taken, the pool waits until its session's first turn ends, at most this long,
# before it starts another (see take()).
REFILL_HOLD_SECONDS = 1.0


class WarmBinding:
    """A pooled CLI's callbacks: they reach its session's actor once it has one, and refuse before."""

    def __init__(self) -> None:
        self.actor: SessionActor | None = None

    async def ask(self, ask: ToolPermissionAsk) -> ToolPermissionAnswer:
        actor = self.actor
        if actor is None:
            # A CLI without a prompt asks nothing; should it, nobody may allow a tool for it.
            return ToolPermissionAnswer(allow=False, message="no run of this session is executing")
        return await actor.permissions.ask(ask)

    async def on_hook(self, event: str, data: dict[str, Any], tool_use_id: str | None) -> dict[str, Any]:
        actor = self.actor
        if actor is None:
            return {}
        return await actor.on_hook(event, data, tool_use_id)


@dataclass(eq=False)
class WarmCli:
    """A connected CLI for a session that does not exist yet: its id, tenant and folders are chosen.
    Also a CLI startRun started for the new session it is creating (`early`, api/runtime/early_start.py),
    which may still be connecting (`starting`)."""

    tenant_id: str
    session_id: str
    # The profile it was started for ("" for the default options; WARM_POOL_PROFILES names the others).
    profile: str
    # The run options (RunOptions JSON) it was started with: a run with other options cannot use it.
    options: dict[str, Any]
    launch: Launch
    connection: AgentConnection
    binding: WarmBinding = field(default_factory=WarmBinding)
    early: bool = False
    # The connect() of an early CLI, until it is over.
    starting: asyncio.Task[None] | None = None
    stopped: bool = False

    async def started(self) -> None:
        """Until the CLI's start is over, connected or not (`connection.alive` tells which)."""
        if self.starting is not None:
            await asyncio.wait({self.starting})
            _retrieve(self.starting)

    async def stop(self) -> None:
        """Stop the CLI, also while it is still starting."""
        self.stopped = True
        if self.starting is not None:
            if not self.starting.done():
                # connect() stops the process it spawned when it is cancelled.
                self.starting.cancel()
                await asyncio.wait({self.starting})
            _retrieve(self.starting)
        await self.connection.close(interrupt_first=False)


def _retrieve(task: asyncio.Task[None]) -> None:
    # A failed start shows as a CLI that is not alive; its error is the actor's to report (it starts
    # a CLI anew, which fails the same way with the reason), not the event loop's.
    if not task.cancelled():
        task.exception()


@dataclass
class _Tenant:
    name: str
    last_seen: float
    configured: bool = False


# The default run options' pool: a startRun that sets no options of its own.
DEFAULT_PROFILE = ""
# A pool is one tenant's CLIs of one profile.
PoolKey = tuple[str, str]


def profile_requests(settings: Settings) -> dict[str, tuple[RunRequest, int]]:
    """Each profile's run request (before the tenant's policy) and its size per replica."""
    profiles: dict[str, tuple[RunRequest, int]] = {}
    if settings.warm_pool_size:
        profiles[DEFAULT_PROFILE] = (RunRequest(prompt="warm"), settings.warm_pool_size)
    for name, profile in settings.warm_pool_profiles.items():
        fields = profile.model_dump(exclude={"size"})
        profiles[name] = (RunRequest(prompt="warm", **fields), profile.size)
    return profiles


class WarmPool:
    def __init__(self, manager: RunManager) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.profiles = profile_requests(manager.settings)
        # With transcripts in the database a session's CLI must mirror into the session's own store,
        # which does not exist before the session does: no pool then (docs/operations.md).
        pooled = manager.settings.session_store != "database"
        self.size = sum(size for _, size in self.profiles.values()) if pooled else 0
        self._ready: dict[PoolKey, list[WarmCli]] = {}
        self._starting = 0
        self._tenants: dict[str, _Tenant] = {}
        self._policy = PolicyBook.from_settings(manager.settings)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._backoff_until = 0.0
        # No refill before this (event-loop time), or before the turn of `_held_for` ends: its pooled
        # CLI was just taken (take(), turn_ended()).
        self._hold_until = 0.0
        self._held_for: str | None = None
        self._hold_over = asyncio.Event()
        # Profiles a tenant's policy does not allow: never tried again for that tenant.
        self._refused: set[PoolKey] = set()

    # -- counts ------------------------------------------------------------------------------------

    @property
    def ready(self) -> int:
        return sum(len(entries) for entries in self._ready.values())

    @property
    def starting(self) -> int:
        """CLIs being started for the pool, not yet ready to be taken."""
        return self._starting

    @property
    def live(self) -> int:
        """CLIs of the pool alive or starting: what it takes of the budget."""
        return self.ready + self._starting

    def ready_for(self, tenant_id: str, profile: str | None = None) -> int:
        """Pooled CLIs of a tenant: of one profile, or of all."""
        return sum(
            len(entries)
            for (tenant, name), entries in self._ready.items()
            if tenant == tenant_id and (profile is None or name == profile)
        )

    def pooled(self, tenant_id: str) -> list[WarmCli]:
        return [cli for (tenant, _), entries in self._ready.items() if tenant == tenant_id for cli in entries]

    # -- what startRun and the dispatcher call -----------------------------------------------------

    def note_new_session(self, tenant_id: str, tenant_name: str) -> None:
        """A tenant started a new session here: keep it warm for a while."""
        if not self.size:
            return
        now = asyncio.get_running_loop().time()
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            self._tenants[tenant_id] = _Tenant(tenant_name, now)
        else:
            tenant.last_seen = now
        self._wake.set()

    def take(self, tenant_id: str, options: dict[str, Any]) -> WarmCli | None:
        """A pooled CLI of this tenant started with exactly these run options (whichever profile), or
        None."""
        for (tenant, _), entries in self._ready.items():
            if tenant != tenant_id:
                continue
            for cli in [cli for cli in entries if not cli.connection.alive]:
                # Died while it waited (killed, out of memory): a run must never get it.
                entries.remove(cli)
                self.discard(cli, remove_files=True)
                self._wake.set()
            for index, cli in enumerate(entries):
                if cli.options == options:
                    del entries[index]
                    # Not at once: starting a CLI takes a core for a few hundred ms, and the CLI just
                    # taken is about to prepare its first answer on the same cores. Not a fixed while
                    # either: a refill that began a second later landed on the session's follow-ups
                    # (the warm pool's follow-up column of benchmarks.first_answer, 1.8x the bare SDK's).
                    # Once the first turn is over, a person reads its answer: the cores are free.
                    self._hold_until = asyncio.get_running_loop().time() + REFILL_HOLD_SECONDS
                    self._held_for = cli.session_id
                    self._hold_over.clear()
                    self._wake.set()
                    return cli
        return None

    def turn_ended(self, session_id: str) -> None:
        """A run on this replica ended: if its session just took a pooled CLI, the refill may begin."""
        if session_id == self._held_for:
            self._hold_over.set()

    def evict_one(self) -> bool:
        """Stop one pooled CLI to make room for a run (the longest-waiting of the coldest tenant)."""
        candidates = [(self._last_seen(key[0]), key) for key, entries in self._ready.items() if entries]
        if not candidates:
            return False
        _, key = min(candidates)
        tenant_id = key[0]
        cli = self._ready[key].pop(0)
        log.info("warm_pool.evicted", tenant_id=tenant_id, session_id=cli.session_id)
        self.discard(cli, remove_files=True)
        return True

    def discard(self, cli: WarmCli, *, remove_files: bool) -> None:
        """Stop a pooled CLI in the background; `remove_files` when no session was ever made of it."""
        task = asyncio.create_task(self._close(cli, remove_files=remove_files), name="warm-pool-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.size or not self.manager.can_execute:
            return
        await self._configured_tenants()
        self._task = asyncio.create_task(self._loop(), name="warm-pool")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for entries in self._ready.values():
            for cli in entries:
                self.discard(cli, remove_files=True)
        self._ready.clear()
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def _configured_tenants(self) -> None:
        if not self.settings.warm_pool_tenants:
            return
        now = asyncio.get_running_loop().time()
        async with self.manager.db.session() as session:
            tenants = TenantRepository(session)
            for name in self.settings.warm_pool_tenants:
                tenant = await tenants.get_by_name(name)
                if tenant is None:
                    log.warning("warm_pool.unknown_tenant", tenant=name)
                    continue
                self._tenants[tenant.id] = _Tenant(name, now, configured=True)

    # -- filling -----------------------------------------------------------------------------------

    def _last_seen(self, tenant_id: str) -> float:
        tenant = self._tenants.get(tenant_id)
        return tenant.last_seen if tenant is not None else float("-inf")

    def targets(self) -> dict[PoolKey, int]:
        """How many pooled CLIs each warm tenant gets of each profile: the profile's size (WARM_POOL_SIZE
        for the default) dealt out one at a time, configured tenants first, then the most recently
        active."""
        now = asyncio.get_running_loop().time()
        horizon = now - self.settings.warm_pool_recent_seconds
        warm = [
            (not tenant.configured, -tenant.last_seen, tenant_id)
            for tenant_id, tenant in self._tenants.items()
            if tenant.configured or tenant.last_seen >= horizon
        ]
        order = [tenant_id for _, _, tenant_id in sorted(warm)]
        for tenant_id in [t for t in self._tenants if t not in order]:
            del self._tenants[tenant_id]
        counts: dict[PoolKey, int] = {}
        for profile, (_, size) in self.profiles.items():
            for slot in range(size if order else 0):
                key = (order[slot % len(order)], profile)
                counts[key] = counts.get(key, 0) + 1
        return counts

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=REFILL_INTERVAL_SECONDS)
            self._wake.clear()
            hold = self._hold_until - asyncio.get_running_loop().time()
            if hold > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hold_over.wait(), timeout=hold)
            self._held_for = None
            try:
                await self._refill()
            except Exception:
                # The next wake-up tries again; a pool that cannot fill only costs speed.
                log.exception("warm_pool.refill_failed")

    async def _refill(self) -> None:
        targets = self.targets()
        for key, entries in self._ready.items():
            for cli in [cli for cli in entries if not cli.connection.alive]:
                log.warning("warm_pool.cli_died", tenant_id=key[0], session_id=cli.session_id)
                entries.remove(cli)
                self.discard(cli, remove_files=True)
            while len(entries) > targets.get(key, 0):
                self.discard(entries.pop(0), remove_files=True)
        if asyncio.get_running_loop().time() < self._backoff_until:
            return
        # One at a time, neediest tenant first: starting CLIs is CPU-heavy and competes with runs.
        while True:
            short = [
                (len(self._ready.get(key, ())) - want, key)
                for key, want in targets.items()
                if len(self._ready.get(key, ())) < want and key not in self._refused
            ]
            if not short or not self.manager.room_for_warm():
                return
            _, key = min(short)
            if not await self._start_one(key):
                self._backoff_until = asyncio.get_running_loop().time() + FAILURE_BACKOFF_SECONDS
                return

    async def _start_one(self, key: PoolKey) -> bool:
        tenant_id, profile = key
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return True
        request, _ = self.profiles[profile]
        try:
            options = apply_policy(request, self.settings, self._policy.for_tenant(tenant.name))
        except ServiceError as exc:
            # The tenant's policy forbids this profile's options: its runs could never have them.
            log.warning("warm_pool.profile_refused", tenant=tenant.name, profile=profile, error=str(exc))
            self._refused.add(key)
            return True
        session_id = str(uuid.uuid4())
        launch: Launch | None = None
        connection: AgentConnection | None = None
        self._starting += 1
        try:
            launch, connection, binding = await new_session_cli(
                self.manager, tenant_id, session_id, options, "warm"
            )
            await connection.connect()
            await connection.warm_up()
        except BaseException as exc:
            await asyncio.shield(self._abandon_start(launch, connection, tenant_id, session_id))
            if isinstance(exc, Exception):
                metrics.WARM_POOL_STARTED.labels(outcome="failed").inc()
                log.warning("warm_pool.start_failed", tenant_id=tenant_id, error=str(exc))
                return False
            raise
        finally:
            self._starting -= 1
        metrics.WARM_POOL_STARTED.labels(outcome="ready").inc()
        cli = WarmCli(tenant_id, session_id, profile, options.to_json(), launch, connection, binding)
        if tenant_id not in self._tenants:
            # The tenant cooled down while its CLI started.
            self.discard(cli, remove_files=True)
        elif self.manager.live_agents() >= self.settings.effective_max_live_agents:
            # Runs took the room meanwhile (a starting CLI cannot be stopped for them; this one no longer
            # counts as starting): give it back.
            self.discard(cli, remove_files=True)
        else:
            self._ready.setdefault(key, []).append(cli)
            log.info("warm_pool.ready", tenant_id=tenant_id, profile=profile, session_id=session_id)
        return True

    async def _abandon_start(
        self, launch: Launch | None, connection: AgentConnection | None, tenant_id: str, session_id: str
    ) -> None:
        if connection is not None:
            await connection.close(interrupt_first=False)
        if launch is not None:
            await self.manager.launcher.release(launch)
        paths = SessionPaths.of(self.settings.data_dir, tenant_id, session_id)
        await asyncio.to_thread(remove_tree, paths.root)

    async def _close(self, cli: WarmCli, *, remove_files: bool) -> None:
        try:
            await cli.stop()
        finally:
            await self.manager.launcher.release(cli.launch)
            if remove_files:
                await asyncio.to_thread(remove_tree, cli.launch.paths.root)


async def new_session_cli(
    manager: RunManager,
    tenant_id: str,
    session_id: str,
    options: RunOptions,
    label: str,
    hook_events: tuple[str, ...] | None = None,
) -> tuple[Launch, AgentConnection, WarmBinding]:
    """A CLI (not yet connected) for a session that does not exist yet, in the session's own new folders,
    with `options` and the tenant's hook events (`hook_events`, else read now); its callbacks reach
    nobody until the binding has an actor. The warm pool starts its CLIs with it too."""
    launcher = manager.launcher
    events: tuple[str, ...]
    if hook_events is None:
        # Side by side: both are on the way to the CLI's start.
        paths, events = await asyncio.gather(
            asyncio.to_thread(launcher.paths, tenant_id, session_id), manager.webhooks.events_for(tenant_id)
        )
    else:
        paths, events = await asyncio.to_thread(launcher.paths, tenant_id, session_id), hook_events
    launch = launcher.prepare(paths, f"{session_id}-{label}")
    binding = WarmBinding()
    hooks = None
    if events:
        timeout = manager.settings.webhook_timeout_seconds + HOOK_TIMEOUT_MARGIN_SECONDS
        hooks = HookProvider(events, binding.on_hook, timeout)
    spec = agent_spec(
        session_id,
        str(paths.workspace),
        options,
        hook_events=events,
        mcp_servers=manager.mcp_registry.config_for(tuple(options.mcp_servers)) or None,
        setting_sources=tuple(manager.settings.agent_setting_sources),
    )
    connection = AgentConnection(
        dataclasses.replace(spec, env=launch.env, cli_path=launch.cli_path), hooks, ask_permission=binding.ask
    )
    return launch, connection, binding
