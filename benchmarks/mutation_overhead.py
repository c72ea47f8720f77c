"""The server's own cost of a follow-up `startRun`, from the request's arrival to the resolver (issue 10).

    .venv/bin/python -m benchmarks.mutation_overhead [--rounds 7] [--calls 2000]

Not part of the test suite, and no agent runs: RunControl.start_run is replaced by a stub that raises
NotFound at once, so what is timed is the path up to the resolver, the resolver and the answer's way back.
Each part is measured old against new in interleaved rounds in this one process (a noisy machine
moves both alike), as the median per call of each side's rounds:

- convert: startRun's arguments converted by Strawberry's `convert_arguments` against
  fast_paths._convert_arguments (converters made once per type, graphql_schema/input_converters.py);
- execute: `schema.execute` of tests/documents.py's START_RUN with a context as get_context makes it,
  with Strawberry's ways (old) or ours (new) in place (`strawberrys`: the argument conversion, the
  extension hooks, MaskErrors' look at the result);
- asgi: a whole POST /graphql through the real app (its middleware, FastAPI's routing and dependency
  injection, Strawberry's view, authentication from its cache, the rate limits), called as an ASGI app
  in-process (no socket, no client library), old against new as for execute;
- bare: for scale, what the app's work costs without FastAPI and Strawberry's HTTP view around it: the
  body parsed, get_context, `schema.execute`, the answer encoded, a response sent. Only a measure of what
  a dedicated POST /graphql route could save; nothing serves requests this way.

Times are CPU and wall time per call on one event loop with nothing else running (a 2-core box).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from cross_web import HTTPException as StrawberryHTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from strawberry.extensions import MaskErrors
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema import schema_converter

from api import app as app_module
from api import errors
from api.app import AuthenticatedGraphQLRouter, create_app, get_context
from api.auth import create_key
from api.settings import Settings
from graphql_schema import fast_paths
from graphql_schema.context import Context
from graphql_schema.live.stream_hooks import StreamingExtensionsRunner
from graphql_schema.schema import MaskWithRequestId, build_schema
from tests.documents import START_RUN

SESSION_ID = "00000000-0000-0000-0000-000000000001"
# A follow-up as benchmarks/first_answer.py sends it, and one with every kind of input field.
FOLLOW_UP = {"prompt": "And now in one word?", "sessionId": SESSION_ID}
FULL = {
    **FOLLOW_UP,
    "model": "claude-sonnet-4-5",
    "thinking": {"mode": "ENABLED", "budgetTokens": 2048, "display": "SUMMARIZED"},
    "systemPromptPreset": {"append": "Be brief."},
    "effort": "LOW",
    "allowedTools": ["Read", "Bash(npm test:*)"],
    "agents": [{"name": "reviewer", "description": "reviews", "prompt": "Review it.", "tools": ["Read"]}],
    "outputSchema": {"type": "object"},
    "onBusy": "ENQUEUE",
}


_OURS = {
    name: StreamingExtensionsRunner.__dict__[name]
    for name in ("operation", "validation", "parsing", "executing")
}
_OUR_MASK = MaskWithRequestId.__dict__["_process_result"]


def strawberrys(on: bool) -> None:
    """Strawberry's own ways in place (on) or ours (off): the argument conversion (fast_paths), the
    extension hooks (graphql_schema/extension_hooks.py) and MaskErrors' look at a result."""
    converter = fast_paths._strawberry_convert_arguments if on else fast_paths._convert_arguments
    setattr(schema_converter, "convert_arguments", converter)  # noqa: B010
    for name, ours in _OURS.items():
        setattr(StreamingExtensionsRunner, name, getattr(SchemaExtensionsRunner, name) if on else ours)
    setattr(MaskWithRequestId, "_process_result", MaskErrors._process_result if on else _OUR_MASK)  # noqa: B010


async def _not_found(principal: Any, request: Any) -> Any:
    raise errors.NotFound("Session", request.session_id or "")


Timed = Callable[[], Awaitable[None]]


async def _per_call(run: Timed, calls: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of `run`, over `calls` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await run()
    return (time.process_time() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6


async def compare(name: str, old: Timed, new: Timed, rounds: int, calls: int, *, setup: bool = True) -> str:
    """Old and new interleaved, `rounds` times each; the medians and new/old."""
    figures: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    for _ in range(3):  # warm both: plans, caches, the document cache
        await old()
        await new()
    for round_ in range(rounds):
        order = [("old", old), ("new", new)] if round_ % 2 == 0 else [("new", new), ("old", old)]
        for side, run in order:
            figures[side].append(await _per_call(run, calls))
    cpu = {side: statistics.median(f[0] for f in values) for side, values in figures.items()}
    wall = {side: statistics.median(f[1] for f in values) for side, values in figures.items()}
    return (
        f"{name:<28} old {cpu['old']:7.1f} µs CPU {wall['old']:7.1f} µs wall | "
        f"new {cpu['new']:7.1f} µs CPU {wall['new']:7.1f} µs wall | "
        f"new/old CPU {cpu['new'] / cpu['old']:.2f} wall {wall['new'] / wall['old']:.2f}"
    )


def _scope(body: bytes, key: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"accept", b"application/json"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def _exchange(
    body: bytes,
) -> tuple[Callable[[], Awaitable[dict[str, Any]]], Callable[[Any], Awaitable[None]], list[Any]]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    return receive, send, sent


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        # The request rate limit raised out of the way: the point is what a request costs.
        settings = Settings(data_dir=Path(data_dir), execute_runs=False, rate_limit_requests_per_second=10**6)
        built: list[Any] = []

        def capture(settings: Settings) -> Any:
            built.append(build_schema(settings))
            return built[-1]

        # The app's schema, to execute documents on it directly, and its GraphQL router.
        app_module.build_schema = capture  # type: ignore[attr-defined]
        routers: list[AuthenticatedGraphQLRouter] = []
        init = AuthenticatedGraphQLRouter.__init__

        def keep(router: AuthenticatedGraphQLRouter, *args: Any, **kwargs: Any) -> None:
            init(router, *args, **kwargs)
            routers.append(router)

        AuthenticatedGraphQLRouter.__init__ = keep  # type: ignore[method-assign]
        app = create_app(settings)
        AuthenticatedGraphQLRouter.__init__ = init  # type: ignore[method-assign]
        async with app.router.lifespan_context(app):
            services = app.state.services
            services.run_control.start_run = _not_found
            key = (await create_key(services.db, tenant_name="bench", name="bench")).secret
            await _report(app, built[0], routers[0], key, services, args)


async def _report(
    app: Any, schema: Any, router: Any, key: str, services: Any, args: argparse.Namespace
) -> None:
    rounds, calls = args.rounds, args.calls
    lines = []

    # convert: the arguments as graphql-core hands them to the resolver.
    start_run = _start_run_field(schema)
    registry, config = schema.schema_converter.scalar_registry, schema.config
    for label, variables in (("follow-up", FOLLOW_UP), ("every field", FULL)):
        values = {"input": _coerced(schema, variables)}

        async def old(values: dict[str, Any] = values) -> None:
            fast_paths._strawberry_convert_arguments(values, start_run.arguments, registry, config)

        async def new(values: dict[str, Any] = values) -> None:
            fast_paths._convert_arguments(values, start_run.arguments, registry, config)

        lines.append(await compare(f"convert ({label})", old, new, rounds, calls * 5))

    principal = await services.authenticator(key)
    context = Context(services, principal)

    async def execute() -> None:
        result = await schema.execute(START_RUN, variable_values={"input": FOLLOW_UP}, context_value=context)
        assert result.data["startRun"]["__typename"] == "NotFoundError", result

    lines.append(
        await compare("execute START_RUN", _with(True, execute), _with(False, execute), rounds, calls)
    )

    body = orjson.dumps({"query": START_RUN, "variables": {"input": FOLLOW_UP}})
    scope = _scope(body, key)

    async def post() -> None:
        receive, send, sent = _exchange(body)
        await app(dict(scope), receive, send)
        assert sent[0]["status"] == 200, sent
        assert b"NotFoundError" in sent[1]["body"], sent

    lines.append(await compare("asgi POST /graphql", _with(True, post), _with(False, post), rounds, calls))

    async def bare() -> None:
        receive, send, sent = _exchange(body)
        request = Request(dict(scope, app=app), receive)
        request_body = orjson.loads(await request.body())
        request_context = await get_context(request)
        result = await schema.execute(
            request_body["query"],
            variable_values=request_body.get("variables"),
            context_value=request_context,
            operation_name=request_body.get("operationName"),
        )
        payload = orjson.dumps({"data": result.data})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        assert b"NotFoundError" in sent[1]["body"]

    strawberrys(False)
    lines.append(await compare("asgi (new) vs bare", post, bare, rounds, calls))

    # POST /graphql served by a plain Starlette route in front of FastAPI's (what a dedicated route
    # would save): get_context called directly, then Strawberry's view as FastAPI's endpoint calls it.
    direct = _direct_route(router)

    async def through_direct() -> None:
        app.router.routes.insert(0, direct)
        try:
            await post()
        finally:
            app.router.routes.remove(direct)

    lines.append(await compare("asgi (new) vs direct route", post, through_direct, rounds, calls))
    print("\n".join(lines))


def _direct_route(router: Any) -> Route:
    async def endpoint(request: Request) -> Response:
        context = await get_context(request)
        # As FastAPI makes the `response` parameter Strawberry's endpoint takes.
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]
        router.temporal_response = sub_response
        try:
            response: Response = await router.run(request=request, context=context, root_value=None)
        except StrawberryHTTPException as exc:
            return PlainTextResponse(exc.reason, status_code=exc.status_code)
        return response

    return Route("/graphql", endpoint, methods=["POST"])


def _with(strawberry_converts: bool, run: Timed) -> Timed:
    async def timed() -> None:
        strawberrys(strawberry_converts)
        await run()

    return timed


def _start_run_field(schema: Any) -> Any:
    definition = schema.schema_converter.type_map["Mutation"].definition
    return next(field for field in definition.fields if field.python_name == "start_run")


def _coerced(schema: Any, variables: dict[str, Any]) -> Any:
    from graphql.utilities import coerce_input_value

    graphql_type = schema._schema.mutation_type.fields["startRun"].args["input"].type
    return coerce_input_value(variables, graphql_type)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of each side")
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (5x that for convert)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
