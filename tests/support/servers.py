"""Real processes for tests: the API server, a private Redis, a private PostgreSQL, throwaway databases.

Every process started here runs in its own process group and is registered in a module-level set, so an
atexit hook can kill whatever a crashed or interrupted test left behind (the agent CLI children included).
"""


# `await sub.next(timeout=2)`, and each helper owns its deadline (overall, not per awaited step).

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import asyncpg
import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
SHARED_REDIS_PORT = 6379

# What a child inherits from the test runner's environment: enough to find binaries, a home and a locale.
# Everything else (DATABASE_URL, REDIS_URL, ANTHROPIC_*…) must be passed explicitly so a developer's shell
# cannot change what a test exercises.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "TERM")

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    # The process leads its own group (start_new_session), so this also reaches grandchildren.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _reap_all() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
        _LIVE.clear()
    for proc in procs:
        _kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


atexit.register(_reap_all)


def _spawn(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        list(args),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    return proc


def _forget(proc: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; afterwards kill any stragglers left in the group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
    # A graceful exit of the leader can still orphan children (e.g. an agent CLI); they share its group.
    _kill_group(proc)
    _forget(proc)
    return proc.returncode


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small copy of ``os.environ`` (PATH, HOME, locale…) overlaid with ``extra``."""
    env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
    # Unbuffered output so the log tail in a failure message is up to date.
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "<no log file>"
    return "\n".join(text.splitlines()[-lines:])


class ServerStartError(RuntimeError):
    """A server process exited or did not become healthy in time; the message carries its log tail."""


class ApiServer:
    """The real API server (``python -m api.cli serve``) as a subprocess on a loopback port.

    ``env`` is laid over a minimal environment (see ``minimal_env``); ``DATA_DIR`` defaults to
    ``<log_dir>/data-<port>``. ``log_dir`` (usually pytest's ``tmp_path``) receives ``api-<port>.log``
    with stdout and stderr. After ``stop()`` or ``kill()`` the same
    object can be started again on the same port, which is how restart and crash tests use it.
    ``command`` replaces the ``python -m api.cli`` prefix (the support self-tests use it).
    """

    def __init__(
        self,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        *,
        port: int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.env = minimal_env(env)
        # The server's default (./var) would be under the repository; replicas that share a DATA_DIR
        # must say so explicitly.
        self.env.setdefault("DATA_DIR", str(Path(log_dir) / f"data-{self.port}"))
        self.extra_args = list(extra_args)
        self.log_path = Path(log_dir) / f"api-{self.port}.log"
        self._command = list(command) if command is not None else [sys.executable, "-m", "api.cli"]
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def args(self) -> list[str]:
        return [
            *self._command,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra_args,
        ]

    def _launch(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restarted server keeps the earlier run's log above the new one.
        self._log = self.log_path.open("ab")
        self._log.write(f"\n=== start: {' '.join(self.args())}\n".encode())
        self._log.flush()
        return _spawn(self.args(), env=self.env, cwd=REPO_ROOT, log=self._log)

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until ``GET /healthz`` answers 200."""
        if self.running:
            raise RuntimeError(f"server on port {self.port} is already running")
        self._proc = proc = self._launch()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while True:
                if proc.poll() is not None:
                    self._close_log()
                    _forget(proc)
                    raise ServerStartError(
                        f"API server exited with {proc.returncode} before becoming healthy;"
                        f" log tail:\n{_tail(self.log_path)}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise ServerStartError(
                        f"API server not healthy after {timeout}s; log tail:\n{_tail(self.log_path)}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code, None if never started."""
        proc = self._proc
        if proc is None:
            return None
        code = await asyncio.to_thread(_terminate, proc, timeout)
        self._close_log()
        return code

    def terminate(self) -> None:
        """Send SIGTERM and return at once, to watch a graceful shutdown from outside; then ``wait()``."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit on its own; returns its exit code. Raises ``TimeoutError``."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("server was never started")
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"API server on port {self.port} still running after {timeout}s")
            await asyncio.sleep(0.05)
        await self.stop()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, not a shutdown."""
        proc = self._proc
        if proc is None:
            return
        _kill_group(proc)
        proc.wait()
        _forget(proc)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        # Last resort for an object dropped without stop(); atexit covers interpreter exit.
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            _kill_group(proc)


class RedisServer:
    """A private ``redis-server`` on its own loopback port, for tests that stop or restart Redis.

    The shared Redis on 6379 is never touched: this class refuses that port. ``stop()`` followed by
    ``start()`` brings Redis back, empty, on the same port.
    """

    def __init__(self, work_dir: Path, *, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        if self.port == SHARED_REDIS_PORT:
            raise ValueError("port 6379 is the shared Redis; tests must not own it")
        self.work_dir = Path(work_dir)
        self.log_path = self.work_dir / f"redis-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it answers PING (blocking; Redis is up in milliseconds)."""
        if self.running:
            raise RuntimeError(f"redis on port {self.port} is already running")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.work_dir),
            "--daemonize",
            "no",
        ]
        self._log = self.log_path.open("ab")
        self._proc = proc = _spawn(args, env=minimal_env(), cwd=self.work_dir, log=self._log)
        deadline = time.monotonic() + timeout
        while not redis_available(port=self.port, timeout=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"redis-server on {self.port} did not start:\n{_tail(self.log_path)}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            _terminate(self._proc, timeout)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL: Redis vanishes without closing its clients' connections cleanly."""
        if self._proc is not None:
            _kill_group(self._proc)
            self._proc.wait()
            _forget(self._proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def redis_available(host: str = "127.0.0.1", port: int = SHARED_REDIS_PORT, timeout: float = 1.0) -> bool:
    """True if a Redis at host:port answers PING. Blocking, at most about ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


async def _pg_connect(database: str = "postgres", timeout: float = 5.0) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database=database, timeout=timeout
    )


def postgres_available(timeout: float = 2.0) -> bool:
    """True if PostgreSQL on 127.0.0.1:5432 accepts user postgres without a password.

    Synchronous so it can sit in a ``skipif`` or a session fixture; it runs its own loop in a thread, so
    it also works while another event loop is running.
    """

    async def probe() -> None:
        conn = await _pg_connect(timeout=timeout)
        await conn.close()

    result: list[bool] = []

    def run() -> None:
        try:
            asyncio.run(probe())
        except (OSError, asyncpg.PostgresError, TimeoutError):
            result.append(False)
        else:
            result.append(True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result) and result[0]


def _database_name(name_or_url: str) -> str:
    name = name_or_url.rsplit("/", 1)[-1].split("?", 1)[0] if "://" in name_or_url else name_or_url
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a test database name: {name!r}")
    return name


def postgres_url(name: str) -> str:
    return f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


async def create_postgres_database(prefix: str) -> str:
    """Create a fresh database ``<prefix>_<random>`` and return its ``postgresql+asyncpg://`` URL."""
    clean = re.sub(r"[^a-z0-9_]", "_", prefix.lower()).strip("_")[:40] or "test"
    if clean[0].isdigit():
        clean = f"t_{clean}"
    name = f"{clean}_{uuid.uuid4().hex[:12]}"
    conn = await _pg_connect()
    try:
        # The name is built from [a-z0-9_] above, so quoting it is enough; DDL takes no parameters.
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return postgres_url(name)


async def drop_postgres_database(name: str) -> None:
    """Drop a database made by ``create_postgres_database``; accepts its name or its URL.

    ``WITH (FORCE)`` ends the sessions a killed server may have left open.
    """
    db = _database_name(name)
    conn = await _pg_connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    finally:
        await conn.close()


def postgres_binary(name: str) -> str | None:
    """A PostgreSQL server program (initdb, postgres, pg_isready): on PATH, else from Debian's versioned
    folder, which is not on PATH by default (the newest version wins)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return str(candidates[-1]) if candidates else None


def _postgres_program(name: str) -> str:
    found = postgres_binary(name)
    if found is None:
        raise ServerStartError(f"{name} not found on PATH or under /usr/lib/postgresql/*/bin")
    return found


class PostgresServer:
    """A private PostgreSQL server (its own initdb, its own loopback port) for tests that stop or restart
    the database; the shared one on 5432 is never touched.

    As root it runs as the ``postgres`` user (PostgreSQL refuses root). ``stop()`` is a fast shutdown (open
    connections are dropped, as in a restart); ``start()`` brings the same data back on the same port.
    ``close()`` stops it and deletes its folder.
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        if self.port == POSTGRES_PORT:
            raise ValueError("port 5432 is the shared PostgreSQL; tests must not own it")
        # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 folders.
        self.work_dir = Path(tempfile.mkdtemp(prefix="caga-pg-"))
        self.data_dir = self.work_dir / "data"
        self.log_path = self.work_dir / "postgres.log"
        self._user_args: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.work_dir, user="postgres", group="postgres")
            self._user_args = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._initialised = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """initdb on first start, then start and wait until it accepts connections (blocking)."""
        if self.running:
            raise RuntimeError(f"postgres on port {self.port} is already running")
        if not self._initialised:
            subprocess.run(
                [*self._user_args, _postgres_program("initdb"), "-D", str(self.data_dir), "-A", "trust",
                 "-U", POSTGRES_USER, "-E", "UTF8", "--no-sync"],
                env=minimal_env(), cwd=self.work_dir, check=True, capture_output=True,
            )  # fmt: skip
            self._initialised = True
        args = [
            *self._user_args, _postgres_program("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.work_dir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip
        self._log = self.log_path.open("ab")
        self._proc = proc = _spawn(args, env=minimal_env(), cwd=self.work_dir, log=self._log)
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(f"postgres on {self.port} did not start:\n{_tail(self.log_path)}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        args = ["-q", "-h", POSTGRES_HOST, "-p", str(self.port), "-U", POSTGRES_USER, "-t", "1"]
        ready = subprocess.run(
            [_postgres_program("pg_isready"), *args],
            env=minimal_env(),
            check=False,
        )
        return ready.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): every client connection is closed, as when the database restarts."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    proc.wait()
            _forget(proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc)
            self._proc.wait()
            _forget(self._proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(
            host=POSTGRES_HOST, port=self.port, user=POSTGRES_USER, database="postgres", timeout=10
        )
        try:
            await conn.execute(f'CREATE DATABASE "{_database_name(name)}"')
        finally:
            await conn.close()
        return self.url(name)
