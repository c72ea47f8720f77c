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
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import Receive, Scope, Send

from api.sandbox.upstream import DEFAULT_UPSTREAM, Forwarder, Upstream, environment_proxy, error
from api.uvicorn_task import UvicornTask

__all__ = ["DEFAULT_UPSTREAM", "HOLD_SECONDS", "ModelGateway", "Pass", "Upstream"]

# What a CLI needs of the model API. Anything else (the console, OAuth, files of other users) stays shut.
ALLOWED_PATH_PREFIX = "/v1/"


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
        self._forward: Forwarder | None = None
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
        self._forward = Forwarder(self.upstream, environment_proxy(self.upstream.base_url, os.environ))
        self._server = UvicornTask(
            self,
            uds=str(self.socket_path),
            name="model-gateway",
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            # Nothing of the sandbox is a proxy to trust, and the answer's headers are the model API's:
            # uvicorn's own Server and Date would go beside the upstream's.
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self._forward is not None:
            await self._forward.aclose()
            self._forward = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Plain ASGI, no request and response objects: the gateway is on the way of every model call
        # of every sandboxed turn, on the server's event loop.
        if scope["type"] != "http":
            return
        token: str | None = None
        bearer: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                token = value.decode("latin-1")
            elif name == b"authorization" and value.startswith(b"Bearer "):
                bearer = value[7:].decode("latin-1")
        if token is None:
            token = bearer
        held = self._passes.get(token or "")
        if held is not None:
            # Its run's begin may still be committing: the call waits for the outcome (Pass.hold).
            await held.wait_settled()
        issued = self._valid(token)
        if issued is None:
            await error(send, 401, "authentication_error", "this pass is not valid (its run is over)")
            return
        path: str = scope["path"]
        if not path.startswith(ALLOWED_PATH_PREFIX) or ".." in path:
            await error(send, 403, "permission_error", f"the model gateway does not forward {path}")
            return
        assert self._forward is not None
        await self._forward(issued.session_id, scope, receive, send)
