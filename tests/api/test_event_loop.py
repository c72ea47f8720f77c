"""The server's loop (api/event_loop.py) starts child processes with CPython's subprocess, not libuv's
fork of the whole server; what a process gives and is given stays the same."""

from __future__ import annotations

import asyncio
import subprocess
from asyncio import unix_events

import anyio
import uvicorn

from api.cli import _loop
from api.event_loop import AgentLoop
from api.runtime.sdk_adapter import bundled_cli_path


def run(main: object) -> object:
    with asyncio.Runner(loop_factory=AgentLoop) as runner:
        return runner.run(main)  # type: ignore[arg-type]


def test_serve_runs_on_the_agent_loop() -> None:
    factory = uvicorn.Config(app=None, loop=_loop()).get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, AgentLoop)
    finally:
        loop.close()


def test_a_process_gets_its_pipes_and_its_exit_code() -> None:
    async def main() -> tuple[bytes, bytes, int | None, object]:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "read x; echo got $x; echo oops >&2; exit 3",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate(b"hi\n")
        return out, err, process.returncode, process._transport  # type: ignore[attr-defined]

    out, err, code, transport = run(main())  # type: ignore[misc]
    assert (out, err, code) == (b"got hi\n", b"oops\n", 3)
    # Started by subprocess.Popen (vfork), not by libuv.
    assert isinstance(transport, unix_events._UnixSubprocessTransport)  # type: ignore[attr-defined]


def test_a_killed_process_and_one_that_cannot_start() -> None:
    async def main() -> int:
        process = await asyncio.create_subprocess_exec("/bin/sleep", "30")
        process.kill()
        code = await process.wait()
        try:
            await asyncio.create_subprocess_exec("/nonexistent/program")
        except FileNotFoundError:
            return code
        raise AssertionError("a missing program must raise")

    assert run(main()) == -9


def test_the_agent_cli_starts_as_the_sdk_starts_it() -> None:
    async def main() -> tuple[str, int | None]:
        # As claude_agent_sdk's SubprocessCLITransport.connect does.
        async with await anyio.open_process(
            [str(bundled_cli_path()), "--version"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        ) as process:
            assert process.stdout is not None
            out = b"".join([chunk async for chunk in process.stdout])
            return out.decode(), await process.wait()

    out, code = run(main())  # type: ignore[misc]
    assert code == 0
    assert "Claude Code" in out
