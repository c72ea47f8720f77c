"""The only way out of a sandbox: a forwarding proxy to the model API that holds the operator's key.

A sandboxed CLI has no network but its own loopback. This gateway's Unix socket is bound into the
sandbox, and the CLI sends its model API calls over it (ANTHROPIC_UNIX_SOCKET; ANTHROPIC_BASE_URL only
names the host); its ANTHROPIC_API_KEY is a pass issued for its connection. The gateway checks the pass,
replaces it with the operator's credentials and forwards to the operator's ANTHROPIC_BASE_URL, streaming
the answer back. So the operator's key never enters a sandbox, and a pass is only honoured while its
session has a run executing: a pass copied out of a finished run opens nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.uvicorn_task import UvicornTask

log = structlog.get_logger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
# What a CLI needs of the model API. Anything else (the console, OAuth, files of other users) stays shut.
ALLOWED_PATH_PREFIX = "/v1/"
# Credentials and hop-by-hop headers never cross the gateway in either direction.
_DROP_REQUEST = frozenset(
    {"host", "x-api-key", "authorization", "connection", "keep-alive", "transfer-encoding", "content-length",
     "proxy-authorization", "te", "upgrade"}
)
_DROP_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


@dataclass(frozen=True)
class Upstream:
    """Where model calls really go, and with which of the operator's credentials."""

    base_url: str
    api_key: str | None = None
    auth_token: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Upstream:
        """The operator's ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN and custom headers."""
        headers: dict[str, str] = {}
        for line in (env.get("ANTHROPIC_CUSTOM_HEADERS") or "").splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                headers[name.strip()] = value.strip()
        return cls(
            base_url=(env.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAM).rstrip("/"),
            api_key=env.get("ANTHROPIC_API_KEY") or None,
            auth_token=env.get("ANTHROPIC_AUTH_TOKEN") or None,
            extra_headers=headers,
        )

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if self.auth_token:
            headers["authorization"] = f"Bearer {self.auth_token}"
        return headers


# The longest a model call waits at the gateway for a run whose begin is still committing (Pass.hold).
HOLD_SECONDS = 60.0


@dataclass
class Pass:
    """One CLI connection's credential. `open` while a run of its session executes.

    `hold()`: a run's prompt went to the CLI while startRun's transaction commits (SessionActor.send_ahead):
    the CLI's model calls wait here, not refused, until `settle()` opens the pass (the run committed) or
    leaves it shut (it did not, and the CLI is stopped)."""

    session_id: str
    token: str
    open: bool = False
    _settled: asyncio.Event | None = field(default=None, repr=False)

    def hold(self) -> None:
        if self._settled is None:
            self._settled = asyncio.Event()

    def settle(self, *, open: bool) -> None:
        self.open = open
        settled, self._settled = self._settled, None
        if settled is not None:
            settled.set()

    async def wait_settled(self) -> None:
        settled = self._settled
        if settled is not None and not self.open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), HOLD_SECONDS)


class ModelGateway:
    """Passes for sandboxed CLIs and the proxy that honours them, served on a Unix socket."""

    def __init__(self, upstream: Upstream, socket_path: Path) -> None:
        self.upstream = upstream
        self.socket_path = socket_path
        self._passes: dict[str, Pass] = {}
        self._client: httpx.AsyncClient | None = None
        self._server: UvicornTask | None = None

    # -- passes ------------------------------------------------------------------------------------

    def issue(self, session_id: str) -> Pass:
        issued = Pass(session_id=session_id, token=f"cagw-{secrets.token_urlsafe(32)}")
        self._passes[issued.token] = issued
        return issued

    def revoke(self, issued: Pass) -> None:
        self._passes.pop(issued.token, None)
        issued.settle(open=False)

    def find(self, token: str | None) -> Pass | None:
        """The pass with this token, open or not (the egress proxy checks it too)."""
        return self._passes.get(token or "")

    def _valid(self, token: str | None) -> Pass | None:
        issued = self._passes.get(token or "")
        if issued is None or not issued.open:
            return None
        # Constant time, though the dict lookup already matched: cheap insurance.
        return issued if secrets.compare_digest(issued.token, token or "") else None

    # -- serving -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Streams of a long turn may pause for minutes between tokens; connects must not.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=15.0, read=600.0, write=60.0, pool=15.0), follow_redirects=False
        )
        self._server = UvicornTask(
            self,
            uds=str(self.socket_path),
            name="model-gateway",
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response = await self._handle(Request(scope, receive))
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        token = request.headers.get("x-api-key")
        if token is None and request.headers.get("authorization", "").startswith("Bearer "):
            token = request.headers["authorization"][7:]
        held = self._passes.get(token or "")
        if held is not None:
            # Its run's begin may still be committing: the call waits for the outcome (Pass.hold).
            await held.wait_settled()
        issued = self._valid(token)
        if issued is None:
            return _error(401, "authentication_error", "this pass is not valid (its run is over)")
        path = request.url.path
        if not path.startswith(ALLOWED_PATH_PREFIX) or ".." in path:
            return _error(403, "permission_error", f"the model gateway does not forward {path}")
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        headers.update(self.upstream.auth_headers())
        url = self.upstream.base_url + path + (f"?{request.url.query}" if request.url.query else "")
        outgoing = self._client.build_request(
            request.method, url, headers=headers, content=request.stream()
        )
        try:
            upstream = await self._client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            log.warning("model_gateway.upstream_failed", session_id=issued.session_id, error=str(exc))
            return _error(502, "api_error", f"the model API could not be reached: {type(exc).__name__}")
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE},
            background=BackgroundTask(upstream.aclose),
        )


def _error(status: int, kind: str, message: str) -> Response:
    # The Messages API's own error shape, so the CLI reports it as it would any API error.
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)
