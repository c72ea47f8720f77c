"""How this replica starts agent CLIs: each in a sandbox of its own (the default), or unconfined when the
operator has said SANDBOX=off.

The session actor asks for a `Launch` when it connects a CLI and gives it back when the connection
closes; while a run executes it holds the launch's model pass open.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from api.runtime.cli_environment import agent_environment, operator_environment, sandboxed_environment
from api.runtime.sdk_adapter import bundled_cli_path
from api.sandbox.bubblewrap import (
    EGRESS_PORT,
    GATEWAY_INSIDE,
    HOME_INSIDE,
    MODEL_URL_INSIDE,
    Bubblewrap,
    SandboxTools,
    SandboxUnavailable,
)
from api.sandbox.egress import EgressProxy
from api.sandbox.layout import SessionPaths
from api.sandbox.leftovers import kill_leftovers
from api.sandbox.model_gateway import ModelGateway, Pass, Upstream
from api.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class Launch:
    """What one CLI connection starts with."""

    paths: SessionPaths
    env: dict[str, str]
    cli_path: str | None = None
    grant: Pass | None = None
    files: list[Path] = field(default_factory=list)


class AgentLauncher:
    def __init__(self, settings: Settings, env_overrides: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._overrides = dict(env_overrides or {})
        self.runtime_dir = settings.runtime_dir or Path(tempfile.gettempdir()) / (
            f"claude-agent-api-{settings.replica_id}"
        )
        self.unavailable: SandboxUnavailable | None = None
        self._bwrap: Bubblewrap | None = None
        self._gateway: ModelGateway | None = None
        self._egress: EgressProxy | None = None

    @property
    def sandboxed(self) -> bool:
        return self._bwrap is not None

    @property
    def ready(self) -> bool:
        """Whether this replica may start agents: sandboxed, or unconfined by the operator's choice."""
        return self.unavailable is None

    def describe(self) -> str:
        if self.unavailable is not None:
            return f"unavailable: {self.unavailable}"
        return "bubblewrap" if self.sandboxed else "off (SANDBOX=off: agents run unconfined)"

    async def check(self) -> SandboxUnavailable | None:
        """Prove the sandbox works here (a probe process), without serving anything: the `serve`
        banner and `doctor` use it; start() does the same before it opens the gateway."""
        bwrap = self._bubblewrap()
        if isinstance(bwrap, SandboxUnavailable):
            return bwrap
        try:
            return await bwrap.probe()
        finally:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _bubblewrap(self) -> Bubblewrap | SandboxUnavailable:
        need_relay = bool(self.settings.sandbox_egress_hosts)
        tools = SandboxTools.find(bundled_cli_path(), self.settings.sandbox_bwrap, need_relay=need_relay)
        if isinstance(tools, SandboxUnavailable):
            return tools
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        egress_socket = self.runtime_dir / "egress.sock" if self.settings.sandbox_egress_hosts else None
        bwrap = Bubblewrap(
            tools,
            self.runtime_dir,
            self.runtime_dir / "gateway.sock",
            tmp_bytes=self.settings.sandbox_tmp_mb * 1024 * 1024,
            egress_socket=egress_socket,
        )
        bwrap.prepare()
        return bwrap

    async def start(self) -> None:
        if self.settings.sandbox == "off":
            log.warning(
                "sandbox.off",
                detail="SANDBOX=off: agent CLIs run unconfined, with this server's user, files and network",
            )
            return
        bwrap = self._bubblewrap()
        if isinstance(bwrap, SandboxUnavailable):
            self._refuse(bwrap)
            return
        problem = await bwrap.probe()
        if problem is not None:
            self._refuse(problem)
            return
        upstream = Upstream.from_environment(operator_environment(self._overrides))
        gateway = ModelGateway(upstream, bwrap.gateway_socket)
        await gateway.start()
        if bwrap.egress_socket is not None:
            self._egress = EgressProxy(self.settings.sandbox_egress_hosts, bwrap.egress_socket, gateway.find)
            await self._egress.start()
        self._bwrap, self._gateway = bwrap, gateway
        log.info("sandbox.ready", kind="bubblewrap", model_upstream=upstream.base_url)

    def _refuse(self, problem: SandboxUnavailable) -> None:
        self.unavailable = problem
        log.error("sandbox.unavailable", reason=problem.reason, fix=problem.fix, runs="refused")

    async def stop(self) -> None:
        if self._bwrap is not None:
            # Every sandbox of this replica binds its gateway socket: none may outlive the replica.
            await asyncio.to_thread(kill_leftovers, str(self._bwrap.gateway_socket))
        if self._egress is not None:
            await self._egress.stop()
            self._egress = None
        if self._gateway is not None:
            await self._gateway.stop()
        self._gateway = self._bwrap = None
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def paths(self, tenant_id: str, session_id: str) -> SessionPaths:
        return SessionPaths.of(self.settings.data_dir, tenant_id, session_id).ensure()

    def prepare(self, paths: SessionPaths, connection_name: str) -> Launch:
        if self.unavailable is not None:
            raise RuntimeError(f"the sandbox is unavailable: {self.unavailable}")
        if self._bwrap is None or self._gateway is None:
            tmp = paths.root / "tmp"
            tmp.mkdir(mode=0o700, exist_ok=True)
            return Launch(
                paths,
                agent_environment(config_dir=paths.agent_dir, tmp_dir=tmp, overrides=self._overrides),
            )
        grant = self._gateway.issue(paths.root.name)
        env = sandboxed_environment(
            config_dir=paths.agent_dir,
            home=HOME_INSIDE,
            model_url=MODEL_URL_INSIDE,
            model_socket=GATEWAY_INSIDE,
            model_pass=grant.token,
            operator=operator_environment(self._overrides),
            egress_url=f"http://agent:{grant.token}@127.0.0.1:{EGRESS_PORT}" if self._egress else None,
        )
        script = self._bwrap.launcher(connection_name, paths, env)
        # options.env is merged over the server's environment for the launcher only; the launcher
        # clears it and sets exactly `env` inside the sandbox.
        return Launch(paths, {}, cli_path=str(script), grant=grant, files=[script])

    async def release(self, launch: Launch) -> None:
        """After the launch's CLI has stopped: its pass, its launcher and whatever of its sandbox is left
        (api/sandbox/leftovers.py)."""
        if launch.grant is not None and self._gateway is not None:
            self._gateway.revoke(launch.grant)
        for path in launch.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if launch.grant is not None:
            await asyncio.to_thread(kill_leftovers, launch.grant.token)
