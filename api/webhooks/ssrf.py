"""Which addresses a webhook may reach: public ones, plus what the operator lists.

The check is on the address the name resolves to, at registration and again at every call, and the
call then connects to that very address (see dispatcher): a name that resolves to 127.0.0.1, a
DNS answer that changes after registration, or an IP written as `2130706433` is judged by where it
really goes. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = {"http": 80, "https": 443}


class UnsafeTarget(Exception):
    """The URL may not be called; `rule` names the check that refused it."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


class BadTarget(ValueError):
    """The URL is malformed or its host does not resolve."""


@dataclass(frozen=True)
class Target:
    """A webhook URL, taken apart."""

    url: str
    scheme: str
    host: str  # lowercased; an IPv6 literal without brackets
    port: int


@dataclass(frozen=True)
class VettedTarget:
    target: Target
    address: IPAddress


def parse_target(url: str) -> Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadTarget(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise BadTarget("a webhook URL must be http:// or https://")
    if not parts.hostname:
        raise BadTarget("a webhook URL needs a host")
    if parts.username is not None or parts.password is not None:
        raise BadTarget("a webhook URL must not carry credentials; use the secret to authenticate calls")
    return Target(url=url.strip(), scheme=scheme, host=parts.hostname.lower(), port=port or SCHEMES[scheme])


def _as_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a webhook may not reach this address by default, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel.
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        # Shared (100.64/10), reserved, documentation and the like: nobody's public endpoint.
        return "non-public"
    return None


@dataclass(frozen=True)
class AllowList:
    """WEBHOOK_ALLOWED_HOSTS: hostnames or IPs, each optionally with a port (`10.0.0.5:8443`, `[::1]:80`).

    A listed hostname allows whatever it resolves to; a listed IP allows that address. Without a port,
    any port.
    """

    names: frozenset[tuple[str, int | None]] = frozenset()
    addresses: frozenset[tuple[IPAddress, int | None]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names: set[tuple[str, int | None]] = set()
        addresses: set[tuple[IPAddress, int | None]] = set()
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            host, port = _split_host_port(entry)
            address = _as_address(host)
            if address is not None:
                addresses.add((address, port))
            else:
                names.add((host, port))
        return cls(frozenset(names), frozenset(addresses))

    def allows_name(self, host: str, port: int) -> bool:
        return (host, None) in self.names or (host, port) in self.names

    def allows_address(self, address: IPAddress, port: int) -> bool:
        return (address, None) in self.addresses or (address, port) in self.addresses


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port) if port.isdigit() else None
    return entry, None  # a bare name, an IPv4 address or an unbracketed IPv6 address


async def resolve(host: str, port: int) -> list[IPAddress]:
    literal = _as_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BadTarget(f"the host {host!r} does not resolve") from exc
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise BadTarget(f"the host {host!r} does not resolve")
    return found


async def vet(url: str, allow: AllowList) -> VettedTarget:
    """The address to call for `url`, or UnsafeTarget. Every resolved address must pass, so a name
    with one public and one loopback record cannot be steered to the loopback one."""
    target = parse_target(url)
    addresses = await resolve(target.host, target.port)
    if not allow.allows_name(target.host, target.port):
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None and not allow.allows_address(address, target.port):
                raise UnsafeTarget(
                    f"{target.host} resolves to a {reason} address ({address}), which webhooks may not "
                    "reach unless WEBHOOK_ALLOWED_HOSTS lists it",
                    rule="webhook.ssrf",
                )
    return VettedTarget(target, addresses[0])
