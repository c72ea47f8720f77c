"""The server's event loop: uvloop, except for starting child processes.

libuv starts a child with fork(), which copies the page tables of the whole server while the loop waits
for the exec: 12 ms from a 300 MB process, 3 ms from 50 MB, against 0.9 and 0.2 ms for CPython's
subprocess, which uses vfork (measured 2026-11-28, /bin/true, medians of 20). The server starts an agent
CLI for every new session, on the way to its first answer, and every other request and stream on the loop
waits that long too. So `subprocess_exec` is asyncio's own (subprocess.Popen, its pipes connected to the
loop), and the child's exit is read from a pidfd on the loop rather than a watcher thread.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from asyncio import unix_events
from collections.abc import Callable
from typing import Any

import uvloop


class AgentLoop(uvloop.Loop):
    """uvloop, with CPython's process start."""

    async def subprocess_exec(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.SubprocessProtocol],
        program: str | bytes | os.PathLike[str],
        *args: str | bytes | os.PathLike[str],
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        universal_newlines: bool = False,
        shell: bool = False,
        bufsize: int = 0,
        encoding: str | None = None,
        errors: str | None = None,
        text: bool | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.SubprocessTransport, asyncio.SubprocessProtocol]:
        if universal_newlines or shell or bufsize != 0 or encoding or errors or text:
            # What asyncio refuses too: the pipes carry bytes, to a protocol.
            raise ValueError("subprocess_exec: bytes pipes only, no shell, bufsize 0")
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
            self, protocol, [program, *args], False, stdin, stdout, stderr, 0, waiter=waiter, **kwargs
        )
        _watch_exit(self, transport)
        try:
            await waiter
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport, protocol


def _watch_exit(loop: asyncio.AbstractEventLoop, transport: Any) -> None:
    pid: int = transport.get_pid()
    pidfd = os.pidfd_open(pid)

    def exited() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            # Reaped already by Popen.poll() (the transport's close() asks it).
            code = transport._proc.returncode if transport._proc.returncode is not None else 255
        transport._process_exited(code)

    loop.add_reader(pidfd, exited)
