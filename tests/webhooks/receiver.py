"""A tenant's webhook endpoint for tests: real HTTP on loopback, signature checked on every call.

`POST /<behaviour>/<token>`: `allow`, `deny` (with a reason), `rewrite` (allow with a changed `content`),
`stop` (`continue: false`), `redirect` (307 to `allow`), `error` (HTTP 500), `slow` (answers only when
the receiver stops), `not-json`.
Calls are kept per token, so each test reads its own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from api.uvicorn_task import UvicornTask
from api.webhooks.signing import HEADER, verify

DENY_REASON = "writes are frozen today"
STOP_REASON = "the tenant stopped this agent"
REWRITTEN = "rewritten by the webhook\n"


@dataclass(frozen=True)
class ReceivedCall:
    behaviour: str
    body: dict[str, Any]
    signature: str
    verified: bool
    host: str


class WebhookReceiver:
    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.calls: dict[str, list[ReceivedCall]] = {}
        self._release = asyncio.Event()
        app = Starlette(routes=[Route("/{behaviour}/{token}", self._handle, methods=["POST"])])
        self._server = UvicornTask(app, name="webhook-receiver", log_config=None, access_log=False)

    @property
    def port(self) -> int:
        return self._server.port

    def url(self, behaviour: str, token: str, secret: str) -> str:
        self.secrets[token] = secret
        return f"http://127.0.0.1:{self.port}/{behaviour}/{token}"

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        self._release.set()
        await self._server.stop()

    async def _handle(self, request: Request) -> Response:
        behaviour, token = request.path_params["behaviour"], request.path_params["token"]
        raw = await request.body()
        signature = request.headers.get(HEADER, "")
        secret = self.secrets.get(token, "")
        verified = bool(secret) and verify(secret, raw, signature, now=time.time())
        self.calls.setdefault(token, []).append(
            ReceivedCall(behaviour, orjson.loads(raw), signature, verified, request.headers.get("host", ""))
        )
        if not verified:
            return PlainTextResponse("bad signature", status_code=401)
        if behaviour == "allow":
            return JSONResponse({"decision": "allow", "reason": "looks fine", "additionalContext": "audited"})
        if behaviour == "deny":
            return JSONResponse({"decision": "deny", "reason": DENY_REASON})
        if behaviour == "rewrite":
            body = orjson.loads(raw)
            changed = {**body["toolInput"], "content": REWRITTEN}
            return JSONResponse({"decision": "allow", "updatedInput": changed})
        if behaviour == "stop":
            return JSONResponse({"continue": False, "reason": STOP_REASON})
        if behaviour == "redirect":
            return RedirectResponse(f"/allow/{token}", status_code=307)
        if behaviour == "error":
            return PlainTextResponse("boom", status_code=500)
        if behaviour == "not-json":
            return PlainTextResponse("<html>hello</html>")
        if behaviour == "slow":
            await self._release.wait()
            return JSONResponse({"decision": "allow"})
        return PlainTextResponse("unknown behaviour", status_code=404)
