"""Outbound access for tools in a sandbox (WebFetch, curl in Bash, HTTP MCP servers): a CONNECT proxy to
the hosts the operator allow-listed, and nowhere else. Empty by default, and then not offered at all.

A sandbox reaches it through a relay on its loopback to a Unix socket (tools speak to a proxy over TCP,
where the CLI's own model calls use the gateway's socket directly); tools find it through HTTPS_PROXY,
which carries the connection's pass as the proxy password. A tunnel opens only for an open pass, an
allow-listed host and port, and addresses that are public, unless the operator listed the address
itself: an allow-listed name that resolves to 127.0.0.1 or 10.x opens nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path

import structlog

from api.sandbox.model_gateway import Pass

log = structlog.get_logger(__name__)

HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class EgressProxy:
    def __init__(self, allowed: list[str], socket_path: Path, find_pass: Callable[[str | None], Pass | None]):
        self.allowed = [entry.lower() for entry in allowed]
        self.socket_path = socket_path
        self._find_pass = find_pass
        self._server: asyncio.Server | None = None
        self._tunnels: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        self.socket_path.chmod(0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tunnels):
                task.cancel()
            await asyncio.gather(*self._tunnels, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
                if len(head) > HEAD_LIMIT:
                    raise Refused(431, "request head too large")
                upstream = await self._open(head)
            except Refused as refused:
                writer.write(
                    f"HTTP/1.1 {refused.status} Refused\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    f"\r\n{refused.reason}\n".encode()
                )
                await writer.drain()
                return
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            up_reader, up_writer = upstream
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._tunnels.discard(task)

    async def _open(self, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.partition(" ")[0]
        if method != "CONNECT":
            raise Refused(405, "only CONNECT tunnels (https) are offered to sandboxes")
        headers = {
            name.strip().lower(): value.strip()
            for name, sep, value in (line.partition(":") for line in lines[1:])
            if sep
        }
        issued = self._find_pass(_proxy_password(headers.get("proxy-authorization")))
        if issued is None or not issued.open:
            raise Refused(407, "no valid pass (tunnels open only while the session's run executes)")
        host, sep, port_text = target.rpartition(":")
        host = host.strip("[]").lower()
        if not sep or not port_text.isdigit() or not host:
            raise Refused(400, f"not a host:port target: {target!r}")
        port = int(port_text)
        entry = self._allowing_entry(host, port)
        if entry is None:
            log.info("egress.refused", session_id=issued.session_id, host=host, port=port)
            raise Refused(403, f"{host}:{port} is not on this server's outbound allow-list")
        address = await self._address(host, port, literal_allowed=_is_ip(entry.rpartition(":")[0] or entry))
        try:
            opened = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise Refused(502, f"{host}:{port} could not be reached ({type(exc).__name__})") from exc
        log.info("egress.tunnel", session_id=issued.session_id, host=host, port=port)
        return opened

    def _allowing_entry(self, host: str, port: int) -> str | None:
        for entry in self.allowed:
            name, sep, entry_port = entry.rpartition(":")
            if not sep or not entry_port.isdigit():
                name, entry_port = entry, "443"
            if int(entry_port) == port and fnmatch.fnmatchcase(host, name.strip("[]")):
                return entry
        return None

    async def _address(self, host: str, port: int, *, literal_allowed: bool) -> str:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for info in infos:
            address = str(info[4][0])
            if literal_allowed or ipaddress.ip_address(address).is_global:
                return address
        raise Refused(403, f"{host} resolves to no public address")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def _proxy_password(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
