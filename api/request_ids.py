"""Request ids: one per HTTP request and per WebSocket operation, in every log line and masked error.

An incoming `X-Request-ID` is kept when it is sane (a proxy's or a client's own id, so one id follows a
request through several systems); anything else is replaced by a fresh id. The id is bound into
structlog's context for everything the request runs, sent back in the `X-Request-ID` response header (on
the WebSocket handshake too), and put into `extensions.requestId` of an "Unexpected error." so an operator
can find its traceback in the logs. A WebSocket operation's id is the connection's id plus `.N`, the
operation's number on that socket.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
LOG_KEY = "request_id"
# Letters, digits and a few separators, as proxies and tracing systems write them: nothing that could
# split a header or forge a log line.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(incoming: str | None) -> str:
    """The caller's id when it is sane, else a fresh one."""
    if incoming is not None and _SANE.fullmatch(incoming):
        return incoming
    return new_request_id()


def current_request_id() -> str | None:
    """The id bound for what is running now (None outside a request)."""
    value = structlog.contextvars.get_contextvars().get(LOG_KEY)
    return value if isinstance(value, str) else None


def _incoming(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == HEADER.encode():
            try:
                return str(value.decode("ascii"))
            except UnicodeDecodeError:
                return None
    return None


class RequestIdMiddleware:
    """Binds the request id around the whole ASGI call and adds the response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(_incoming(scope))
        scope.setdefault("state", {})[LOG_KEY] = request_id
        header = (HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(k, v) for k, v in message.get("headers") or () if k.lower() != HEADER.encode()]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        with structlog.contextvars.bound_contextvars(**{LOG_KEY: request_id}):
            await self.app(scope, receive, send_with_id)
