"""create_app(settings) -> FastAPI: the lifespan builds every resource and tears it down in reverse."""

from __future__ import annotations

import gc
import json
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any, cast

import orjson
import structlog
from cross_web import HTTPException as StrawberryHTTPException
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.types.execution import ExecutionResult, PreExecutionError

from api.auth import Authenticator, bearer_token
from api.body_limit import BodyLimitMiddleware
from api.control.checkpoints import CheckpointControl
from api.control.live import LiveControl
from api.control.permissions import PermissionControl
from api.control.router import CommandRouter
from api.control.runs import RunControl
from api.control.sessions import SessionControl
from api.errors import RateLimited
from api.events.bus import EventBus
from api.events.log import EventLog
from api.key_watch import REVOKED_CLOSE_CODE, KeyWatch
from api.limits import Limits
from api.request_ids import RequestIdMiddleware, current_request_id, new_request_id
from api.runtime.run_manager import RunManager
from api.sandbox.launcher import AgentLauncher
from api.services import Services
from api.settings import Settings
from api.web import mount_web, render_graphiql
from api.webhooks.registry import WebhookRegistry
from api.ws_protocol import FRAMES, SHARED_FRAME, SHARED_SINK, SharedFrameWebSocketProtocol
from graphql_schema.context import Context
from graphql_schema.live.shared_events import encoded_next_frame, shared_result_wire
from graphql_schema.schema import build_schema
from persistence.database import Database, is_unavailable
from persistence.migrations import upgrade_head

log = structlog.get_logger(__name__)


def _services(connection: HTTPConnection) -> Services:
    return cast(Services, connection.app.state.services)


def _is_ide_page(request: Request) -> bool:
    return (
        request.method == "GET"
        and "text/html" in request.headers.get("accept", "")
        and "query" not in request.query_params
    )


async def get_context(connection: HTTPConnection) -> Context:
    """HTTP callers authenticate here (401 before anything runs); sockets in on_ws_connect."""
    services = _services(connection)
    if connection.scope["type"] == "websocket":
        return Context(services, None)
    request = cast(Request, connection)
    if _is_ide_page(request) and services.settings.graphiql:
        return Context(services, None)
    try:
        principal = await services.authenticator(bearer_token(request.headers.get("authorization")))
    except (SQLAlchemyError, OSError) as exc:
        log.warning("auth.database_unavailable", error=str(exc))
        raise HTTPException(503, "the database is unavailable; try again shortly") from exc
    if principal is None:
        raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
    await services.limits.check_request(principal)  # RateLimited: 429, see _too_many_requests
    return Context(services, principal)


# 1013 (try again later): graphql-ws clients retry it; 1011 (internal error) they treat as fatal.
TRY_AGAIN_LATER = 1013


class DatabaseUnavailableError(Exception):
    """The key could not be checked because the database is unreachable (not the caller's fault)."""


class KeyCheckedSocketHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, plus what a socket that lives for hours needs: its key re-checked
    (api/key_watch.py), and a retryable close when the database cannot check it at all.

    It lives here because only the app factory may import graphql_schema (its Context)."""

    @property
    def api_key_id(self) -> str | None:
        principal = self.context.principal
        return principal.api_key_id if principal is not None else None

    async def close_revoked(self) -> None:
        # Operations first, so none of them writes to a socket that is closing.
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(code=REVOKED_CLOSE_CODE, reason="API key revoked")

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except DatabaseUnavailableError:
            await self.websocket.close(
                code=TRY_AGAIN_LATER, reason="the database is unavailable; try again shortly"
            )

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # The operation's task copies the context here, so its log lines and masked errors carry its id:
        # the socket's request id and the operation's number on it.
        self.operations_started = getattr(self, "operations_started", 0) + 1
        connection_id = current_request_id() or new_request_id()
        with structlog.contextvars.bound_contextvars(request_id=f"{connection_id}.{self.operations_started}"):
            await super().handle_subscribe(message)

    async def send_message(self, message: Any) -> None:
        # A subscription event shared by many subscribers (graphql_schema/live/shared_events.py) is
        # encoded once; only the frame around it is this socket's own. Marked as shared, the server's
        # WebSocket protocol compresses and frames it once for every socket too (api/ws_protocol.py).
        frame = encoded_next_frame(message, self.view.encode_json)
        socket = getattr(self.websocket, "ws", None)
        if frame is None or socket is None:
            await super().send_message(message)
            return
        try:
            await socket.send({"type": "websocket.send", "text": frame, SHARED_FRAME: True})
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc

    _shared_sink: SharedFrameWebSocketProtocol | None = None

    async def _send_result_stream(
        self, operation: Operation[Context, None], result_source: AsyncGenerator[Any, None]
    ) -> None:
        # Strawberry's loop, plus a short cut for a shared result (graphql_schema/live/shared_events.py)
        # when our protocol can take it at once: its wire bytes go straight to the socket, skipping the
        # `next` message's dicts and the three coroutines (send_next, send_operation_message,
        # send_message) that each delivery in a burst to many watchers otherwise passes through.
        sink = self._shared_sink
        if sink is None:
            await super()._send_result_stream(operation, result_source)
            return
        encode = self.view.encode_json
        is_first_result = True
        async for result in result_source:
            if is_first_result and isinstance(result, PreExecutionError):
                await self._handle_pre_execution_error(operation, result)
                return
            if not isinstance(result, ExecutionResult):
                await self._reject_incremental_delivery(operation)
                return
            is_first_result = False
            if not result.errors and not result.extensions and not operation.completed:
                window_bits = sink.shared_window_bits_now()
                if window_bits != -1:
                    wire = shared_result_wire(result.data, operation.id, encode, window_bits, FRAMES.build)
                    if wire is not None:
                        sink.queue_shared_now(wire)
                        continue
            await operation.send_next(result)

    async def handle(self) -> None:
        socket = getattr(self.websocket, "ws", None)
        if socket is not None:
            sink = socket.scope.get("extensions", {}).get(SHARED_SINK)
            self._shared_sink = sink if isinstance(sink, SharedFrameWebSocketProtocol) else None
        watch = self.context.services.key_watch
        watch.add(self)
        try:
            await super().handle()
        finally:
            watch.discard(self)


async def _too_many_requests(request: Request, exc: Exception) -> JSONResponse:
    """429 with Retry-After, and a body a GraphQL client can read like any other error."""
    assert isinstance(exc, RateLimited)
    error = {
        "message": exc.message,
        "extensions": {"code": exc.code, "retryAfterSeconds": exc.retry_after_seconds},
    }
    return JSONResponse(
        {"data": None, "errors": [error]},
        status_code=429,
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_seconds)))},
    )


class AuthenticatedGraphQLRouter(GraphQLRouter[Context, None]):
    graphql_transport_ws_handler_class = KeyCheckedSocketHandler

    def decode_json(self, data: str | bytes) -> object:
        """orjson, for HTTP bodies and WebSocket frames alike: it refuses invalid UTF-8, lone surrogates
        and nesting past 1024 levels with a JSONDecodeError, which Strawberry answers with HTTP 400 (or
        closes the socket 4400), where the standard library raised errors that became HTTP 500s."""
        return orjson.loads(data)

    def encode_json(self, data: object) -> str:
        """orjson for the responses as well: the standard library's encoder was a noticeable share of the
        CPU of a large read (a page of events). The same JSON as `json.dumps(..., separators=(",", ":"))`
        up to how non-ASCII text is written (UTF-8 rather than \\u escapes); what orjson cannot encode
        (an integer beyond 64 bits in a JSON value) falls back to the standard library. Text, not bytes:
        the WebSocket sends what this returns, and graphql-transport-ws frames must be text frames."""
        try:
            return orjson.dumps(data).decode()
        except orjson.JSONEncodeError:
            return json.dumps(data, separators=(",", ":"))

    def parse_json(self, data: str | bytes) -> Any:
        parsed = super().parse_json(data)
        if not isinstance(parsed, dict):
            raise StrawberryHTTPException(400, "the request body must be a JSON object")
        return parsed

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        """GraphiQL from this server's own copies of its assets (api/web), never from a CDN."""
        return render_graphiql(_services(request).settings)

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        header = params.get("Authorization") or params.get("authorization")
        try:
            principal = await context.services.authenticator(
                bearer_token(header if isinstance(header, str) else None)
            )
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("auth.database_unavailable", error=repr(exc)[:300], transport="websocket")
            raise DatabaseUnavailableError from exc
        if principal is None:
            # graphql-ws clients retry 4403 after re-evaluating connectionParams, so a fresh key can get in.
            raise ConnectionRejectionError({"message": "missing or invalid API key"})
        context.principal = principal
        return None


def create_app(settings: Settings | None = None, *, agent_env: Mapping[str, str] | None = None) -> FastAPI:
    """The ASGI app. `agent_env` adds variables for the agent CLI (the scripted model's URL, in tests)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            url = settings.effective_database_url
            if settings.migrate_on_start:
                await upgrade_head(url)
            env_overrides = dict(agent_env or {})
            if settings.scripted_model:
                env_overrides.update(await _start_scripted_model(stack))
            db = Database(url)
            stack.push_async_callback(db.dispose)
            bus = EventBus(settings.redis_url, watcher_queue_size=settings.watcher_queue_size)
            await bus.start()
            stack.push_async_callback(bus.stop)
            event_log = EventLog(db, bus, redis_url=settings.redis_url)
            stack.push_async_callback(event_log.close)
            launcher = AgentLauncher(settings, env_overrides)
            await launcher.start()
            stack.push_async_callback(launcher.stop)
            manager = RunManager(settings, db, event_log, bus, launcher)
            await manager.start()
            stack.push_async_callback(manager.stop)
            router = CommandRouter(manager)
            authenticator = Authenticator(db, ttl=settings.auth_cache_seconds)
            key_watch = KeyWatch(db, interval=settings.ws_auth_recheck_seconds, authenticator=authenticator)
            await key_watch.start()
            stack.push_async_callback(key_watch.stop)
            limits = Limits.from_settings(settings)
            stack.push_async_callback(limits.close)
            app.state.services = Services(
                settings=settings,
                db=db,
                bus=bus,
                event_log=event_log,
                run_manager=manager,
                run_control=RunControl(settings, event_log, manager, limits),
                limits=limits,
                authenticator=authenticator,
                webhooks=WebhookRegistry(settings, db),
                permission_control=PermissionControl(event_log, router),
                live_control=LiveControl(settings, db, router),
                session_control=SessionControl(settings, event_log, router),
                checkpoint_control=CheckpointControl(settings, event_log, manager, router),
                key_watch=key_watch,
            )
            log.info(
                "server.started",
                replica=settings.replica_id,
                database=db.dialect,
                fanout="redis" if settings.redis_url else "in-process",
                scripted_model=settings.scripted_model,
                sandbox=launcher.describe(),
            )
            # What startup built (the schema, the ORM's mappers, the settings, imported modules) lives as long
            # as the server: out of the collector's sight, so a full collection under load walks only what
            # requests allocate, not the whole heap (each took 90-175 ms under read load: latency spikes, and
            # about a tenth of the server's CPU). Unfrozen at shutdown, so a process that builds apps again
            # (the tests) can still collect what this one leaves.
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()
            log.info("server.stopping", replica=settings.replica_id)

    app = FastAPI(title="Claude Agent GraphQL API", lifespan=lifespan, docs_url=None, redoc_url=None)
    router = AuthenticatedGraphQLRouter(
        build_schema(settings),
        context_getter=get_context,
        graphql_ide="graphiql" if settings.graphiql else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=timedelta(seconds=settings.connection_init_timeout_seconds),
        allow_queries_via_get=True,
        allowed_origins=settings.allowed_origins,
    )
    app.include_router(router, prefix="/graphql")
    mount_web(app, settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    # Outermost, so every response (a 413 or a 401 included) carries the id its log lines have.
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(RateLimited, _too_many_requests)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        services = _services(request)
        launcher = services.run_manager.launcher
        checks: dict[str, Any] = {
            "database": await services.db.ping(),
            "fanout": await services.bus.is_healthy(),
            # A replica that executes runs but cannot confine agents is not ready to serve.
            "sandbox": launcher.ready or not services.settings.execute_runs,
        }
        ready = all(checks.values())
        return JSONResponse(
            {"ready": ready, **checks, "sandboxMode": launcher.describe()}, status_code=200 if ready else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _start_scripted_model(stack: AsyncExitStack) -> dict[str, str]:
    from api.scripted_model.server import ScriptedModelServer, scripted_model_cli_env

    server = ScriptedModelServer()
    await server.start()
    stack.push_async_callback(server.stop)
    log.info("scripted_model.started", base_url=server.base_url)
    return scripted_model_cli_env(server.base_url)
