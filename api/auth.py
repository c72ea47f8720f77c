"""API keys: generation, hashing and lookup. A key is `cak_<prefix>_<secret>`; only a hash is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from persistence.database import Database
from persistence.repositories.tenants import ApiKeyRepository, TenantRepository

KEY_PREFIX = "cak_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key and its tenant. Everything a caller touches is scoped by tenant_id."""

    tenant_id: str
    tenant_name: str
    api_key_id: str

    @property
    def actor(self) -> str:
        return f"key:{self.api_key_id}"


@dataclass(frozen=True)
class NewKey:
    key_id: str
    tenant_id: str
    tenant_name: str
    secret: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(key: str) -> tuple[str, str] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, _ = key[len(KEY_PREFIX) :].partition("_")
    return (prefix, key) if sep and prefix else None


async def create_key(db: Database, *, tenant_name: str, name: str | None) -> NewKey:
    prefix = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    async with db.session() as session:
        tenant = await TenantRepository(session).get_or_create(tenant_name)
        key = await ApiKeyRepository(session).create(
            tenant_id=tenant.id, name=name, prefix=prefix, key_hash=_hash(secret)
        )
        await session.commit()
    return NewKey(key_id=key.id, tenant_id=tenant.id, tenant_name=tenant.name, secret=secret)


async def authenticate(db: Database, key: str | None) -> Principal | None:
    """The principal for a presented key, or None when it is missing, unknown or revoked."""
    parts = _split(key or "")
    if parts is None:
        return None
    prefix, secret = parts
    async with db.session() as session:
        found = await ApiKeyRepository(session).get_by_prefix(prefix)
        if found is None:
            return None
        api_key, tenant = found
        if api_key.revoked_at is not None or not hmac.compare_digest(api_key.key_hash, _hash(secret)):
            return None
        return Principal(tenant_id=tenant.id, tenant_name=tenant.name, api_key_id=api_key.id)


class Authenticator:
    """`authenticate` with a short memory: a verified key is trusted for `ttl` seconds without asking the
    database (the lookup was 9 % of a request's CPU). So a revoked key is refused within `ttl`, not at once.

    Entries are keyed by the key's SHA-256, never the key itself; unknown and revoked keys are never
    remembered, so a new key works at once and guessing costs a lookup each time. `ttl` 0: no memory.

    The keys of open WebSockets are re-checked every few seconds anyway (api/key_watch.py): each check
    renews their entries (confirmed()), so a client that keeps a socket open, as a chat frontend does,
    never waits for the lookup on a request, a new session's startRun included, where it came before the
    session's CLI could start.
    """

    def __init__(
        self, db: Database, *, ttl: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._verified: dict[str, tuple[float, Principal]] = {}

    async def __call__(self, key: str | None) -> Principal | None:
        if not key or self.ttl <= 0:
            return await authenticate(self.db, key)
        digest = _hash(key)
        now = self.clock()
        cached = self._verified.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await authenticate(self.db, key)
        if principal is None:
            self._verified.pop(digest, None)
            return None
        if len(self._verified) >= self.size:
            self._verified = {k: v for k, v in self._verified.items() if v[0] > now}
            while len(self._verified) >= self.size:
                del self._verified[next(iter(self._verified))]
        self._verified[digest] = (now + self.ttl, principal)
        return principal

    def confirmed(self, checked: set[str], valid: set[str], since: float) -> None:
        """The keys `checked` were looked up by a query sent at `since` (this clock), and those in `valid`
        were neither revoked nor deleted then: their entries are trusted until `since + ttl`, as if that
        query had been a lookup of ours; the others' entries go at once."""
        if self.ttl <= 0 or not checked:
            return
        until = since + self.ttl
        for digest, (expires, principal) in list(self._verified.items()):
            if principal.api_key_id not in checked:
                continue
            if principal.api_key_id not in valid:
                del self._verified[digest]
            elif expires < until:
                self._verified[digest] = (until, principal)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


__all__ = ["Authenticator", "NewKey", "Principal", "authenticate", "bearer_token", "create_key"]
