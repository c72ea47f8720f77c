"""The sandbox an agent CLI runs in: bubblewrap, started through a launcher the SDK takes as `cli_path`.

Inside: uid 1000 in a user namespace of its own, its own PID, IPC, UTS and network namespaces (no network
but a private loopback), system directories read-only, a private /tmp, the session's workspace and agent
state read-write, and nothing else of the host: no server files, no database, no other session, no /proc
of the host. The only way out is the model gateway's Unix socket, bound in, which the CLI calls directly
(ANTHROPIC_UNIX_SOCKET); with an egress allow-list, also a relay on the sandbox's loopback to the egress
proxy's socket.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from api.sandbox.layout import SessionPaths

SANDBOX_UID = 1000
# Where things appear inside every sandbox.
CLI_INSIDE = "/opt/claude-agent/claude"
GATEWAY_INSIDE = "/run/claude-agent/gateway.sock"
EGRESS_INSIDE = "/run/claude-agent/egress.sock"
HOME_INSIDE = "/tmp/home"
# The CLI sends its model calls over GATEWAY_INSIDE (ANTHROPIC_UNIX_SOCKET); the URL only names the
# request's host and path. Its loopback port 80 has nothing listening, so a call that ever ignored the
# socket would be refused at once rather than go anywhere.
MODEL_URL_INSIDE = "http://localhost"
EGRESS_PORT = 8788

# Variables the SDK sets on the process it starts; the launcher passes them on by name.
SDK_VARIABLES = (
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_AGENT_SDK_VERSION",
    "CLAUDE_AGENT_SDK_CLIENT_APP",
    "CLAUDE_CODE_SDK_READS_SESSION_STATE",
    "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING",
    "CLAUDE_CODE_EMIT_SESSION_STATE_EVENTS",
    "TRACEPARENT",
    "TRACESTATE",
)
# Read-only, when present: what programs need to run (certificates, alternatives' symlinks, time zones).
_ETC_KEPT = (
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/mime.types",
    "/etc/bash.bashrc",
    "/etc/profile",
    "/etc/inputrc",
)
_LOCALTIME = "/etc/localtime"
_PASSWD = f"agent:x:{SANDBOX_UID}:{SANDBOX_UID}:agent:{HOME_INSIDE}:/bin/bash\n"
_GROUP = f"agent:x:{SANDBOX_UID}:\n"
_HOSTS = "127.0.0.1 localhost sandbox\n::1 localhost\n"


@dataclass(frozen=True)
class SandboxTools:
    bwrap: str
    # socat: only the egress relay needs it (None when there is no egress allow-list).
    relay: str | None
    cli: Path

    @classmethod
    def find(
        cls, cli: Path, bwrap_name: str = "bwrap", need_relay: bool = False
    ) -> SandboxTools | SandboxUnavailable:
        bwrap = shutil.which(bwrap_name)
        if bwrap is None:
            return SandboxUnavailable(
                f"bubblewrap ({bwrap_name}) is not installed", "install it: apt-get install bubblewrap"
            )
        relay = shutil.which("socat")
        if relay is None and need_relay:
            return SandboxUnavailable(
                "socat is not installed (SANDBOX_EGRESS_HOSTS needs it)", "install it: apt-get install socat"
            )
        if not os.access(cli, os.X_OK):
            return SandboxUnavailable(f"the agent CLI {cli} is not executable", "reinstall claude-agent-sdk")
        return cls(bwrap=bwrap, relay=relay, cli=cli)


@dataclass(frozen=True)
class SandboxUnavailable:
    """Why sandboxes cannot run here, and what the operator can do about it."""

    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.reason}; {self.fix}"


class Bubblewrap:
    """Builds launchers for sessions. `runtime_dir` is this replica's private folder, never bound."""

    def __init__(
        self,
        tools: SandboxTools,
        runtime_dir: Path,
        gateway_socket: Path,
        tmp_bytes: int,
        egress_socket: Path | None = None,
    ) -> None:
        self.tools = tools
        self.runtime_dir = runtime_dir
        self.gateway_socket = gateway_socket
        self.egress_socket = egress_socket
        self.tmp_bytes = tmp_bytes
        self._etc = runtime_dir / "etc"
        self._launchers = runtime_dir / "launchers"

    def prepare(self) -> None:
        self._launchers.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._etc.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, text in (("passwd", _PASSWD), ("group", _GROUP), ("hosts", _HOSTS)):
            (self._etc / name).write_text(text)

    def base_arguments(self) -> list[str]:
        """Everything but the session: namespaces, identity, system directories, /proc, /dev, /tmp."""
        # Here and below, a flag and its values share a line: the formatter would give each its own.
        # fmt: off
        args = [
            self.tools.bwrap,
            "--unshare-all",
            "--unshare-user",
            # No nested user namespaces: less kernel surface for code that is trying to get out.
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID),
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]
        # fmt: on
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            path = Path(top)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), top]
            elif path.is_dir():
                args += ["--ro-bind", top, top]
        for kept in _ETC_KEPT:
            if Path(kept).exists():
                args += ["--ro-bind", kept, kept]
        localtime = Path(_LOCALTIME)
        if localtime.is_symlink():
            # As a link, like the host's: a bound copy is a plain file, and the CLI's ICU then finds the
            # zone's name by comparing it with every file under /usr/share/zoneinfo (~2,700 opens, about
            # 60 ms of each cold start, measured 2026-11-27). The link's target is under the bound /usr.
            args += ["--symlink", os.readlink(localtime), _LOCALTIME]
        elif localtime.exists():
            args += ["--ro-bind", _LOCALTIME, _LOCALTIME]
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind", str(self._etc / name), f"/etc/{name}"]
        # fmt: off
        args += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(self.tmp_bytes), "--tmpfs", "/tmp",
            "--dir", HOME_INSIDE,
            "--ro-bind", str(self.tools.cli), CLI_INSIDE,
        ]
        # fmt: on
        return args

    @staticmethod
    def sealed() -> list[str]:
        """Last: the sandbox's root is a tmpfs, which would otherwise take writes without a size limit."""
        return ["--remount-ro", "/"]

    def launcher(self, name: str, paths: SessionPaths, env: Mapping[str, str]) -> Path:
        """Write the executable the SDK starts as the CLI for one connection; `env` is all it gets.

        The file holds the connection's gateway pass, so it lives in the runtime folder (0700, never
        bound into a sandbox) and is removed when the connection closes.
        """
        args = [*self.base_arguments(), "--ro-bind", str(self.gateway_socket), GATEWAY_INSIDE]
        if self.egress_socket is not None:
            args += ["--ro-bind", str(self.egress_socket), EGRESS_INSIDE]
        # fmt: off
        args += [
            "--bind", str(paths.workspace), str(paths.workspace),
            "--bind", str(paths.agent_dir), str(paths.agent_dir),
            *self.sealed(),
            "--chdir", str(paths.workspace),
            "--clearenv",
        ]
        # fmt: on
        for key, value in sorted(env.items()):
            args += ["--setenv", key, value]
        if self.egress_socket is None:
            # The model is a Unix socket away: nothing to start before the CLI, which is bubblewrap's child.
            inside = [CLI_INSIDE]
        else:
            assert self.tools.relay is not None, "SandboxTools.find(need_relay=True) when egress is on"
            # Tools reach the egress proxy through a relay on loopback (HTTPS_PROXY is a TCP URL). Wait
            # (bounded) until it listens: a tool call is rare before that, but must not find it shut.
            relay = (
                f"{shlex.quote(self.tools.relay)} TCP-LISTEN:{EGRESS_PORT},bind=127.0.0.1,fork,reuseaddr "
                f"UNIX-CONNECT:{EGRESS_INSIDE} &\n"
                f"i=0; until grep -qi ':{EGRESS_PORT:04X} 00000000:0000 0A' /proc/net/tcp; do\n"
                '  i=$((i+1)); [ "$i" -gt 500 ] && break; sleep 0.01\n'
                "done\n"
                'exec "$@"'
            )
            inside = ["/bin/sh", "-c", relay, "sh", CLI_INSIDE]
        script = (
            "#!/bin/bash\n"
            "# Generated by claude-agent-api for one agent connection; removed when it closes.\n"
            "sdk=()\n"
            f"for name in {' '.join(SDK_VARIABLES)}; do\n"
            '  [ -n "${!name+x}" ] && sdk+=(--setenv "$name" "${!name}")\n'
            "done\n"
            # bwrap itself starts with an empty environment: its init process (pid 1 in the sandbox)
            # keeps the environment it was started with, readable from inside through /proc/1/environ.
            # bash's `exec -c` empties it without a further program (env -i) to start.
            f"exec -c {' '.join(shlex.quote(arg) for arg in args)} "
            f'"${{sdk[@]}}" -- {" ".join(shlex.quote(arg) for arg in inside)} "$@"\n'
        )
        path = self._launchers / f"{name}.sh"
        path.write_text(script)
        path.chmod(0o700)
        return path

    async def probe(self) -> SandboxUnavailable | None:
        """Start a sandbox as a CLI would get it and check it is really confined; None when all is well."""
        checks = (
            "id -u; test -r /etc/shadow && echo shadow; touch /probe 2>/dev/null && echo writable; "
            f"{CLI_INSIDE} --version"
        )
        # fmt: off
        args = [
            *self.base_arguments(), *self.sealed(),
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
            "--", "/bin/sh", "-c", checks,
        ]
        # fmt: on
        try:
            process = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={}
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=30)
        except (OSError, TimeoutError) as exc:
            return SandboxUnavailable(f"bubblewrap could not be started ({exc})", _NAMESPACE_FIX)
        lines = out.decode(errors="replace").split()
        if process.returncode != 0:
            detail = err.decode(errors="replace").strip().splitlines()
            return SandboxUnavailable(
                f"bubblewrap failed: {detail[-1] if detail else f'exit code {process.returncode}'}",
                _NAMESPACE_FIX,
            )
        if not lines or lines[0] != str(SANDBOX_UID) or {"shadow", "writable"} & set(lines):
            return SandboxUnavailable(
                f"the sandbox is not confined as expected ({lines[:3]})", _NAMESPACE_FIX
            )
        return None


_NAMESPACE_FIX = (
    "unprivileged user namespaces must be allowed (sysctl kernel.unprivileged_userns_clone=1 and "
    "user.max_user_namespaces > 0; in Docker run with the seccomp profile in docs/operations.md or "
    "--security-opt seccomp=unconfined); or set SANDBOX=off to run agents unconfined "
    "(never with untrusted callers)"
)
