"""The ASGI app: the Messages API routes the CLI calls, plus ``/_scripted/*`` for tests."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.scripted_model.builtins import builtin_scenario
from api.scripted_model.conversation import (
    select_scenario,
    structured_side_query_schema,
    turn_position,
)
from api.scripted_model.scenario import (
    Scenario,
    ScenarioError,
    Step,
    StepError,
    TextBlock,
    parse_scenario,
)
from api.scripted_model.sse import (
    Reply,
    error_body,
    message_json,
    paced_duration,
    resolve_reply,
    stream_error,
    stream_reply,
)
from api.scripted_model.structured import example_for_schema

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORDED = 200
MODEL_IDS = ("claude-opus-5-5", "claude-sonnet-5", "claude-haiku-4-5")
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})


class RequestRecorder:
    """The last N requests, most recent last; tests read them through ``GET /_scripted/requests``."""

    def __init__(self, limit: int) -> None:
        self._records: deque[dict[str, Any]] = deque(maxlen=limit)

    def add(self, record: dict[str, Any]) -> None:
        self._records.append(record)

    def snapshot(self) -> list[dict[str, Any]]:
        return list(self._records)

    def clear(self) -> None:
        self._records.clear()


def create_scripted_model_app(max_recorded: int = DEFAULT_MAX_RECORDED) -> Starlette:
    """Build the stand-in for the Anthropic Messages API (see the package docstring for scenarios)."""
    recorder = RequestRecorder(max_recorded)

    async def messages(request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error_response(StepError(400, "invalid_request_error", "request body is not JSON"))
        if not isinstance(body, dict):
            return _error_response(StepError(400, "invalid_request_error", "request body must be an object"))
        record = _record_base(request, body)
        recorder.add(record)
        if not _has_credentials(request):
            # As the real API does: a CLI started without a key must fail the way it would in production.
            record["error"] = "missing credentials"
            return _error_response(StepError(401, "authentication_error", "x-api-key header is required"))
        try:
            reply = _plan_reply(body, len(raw), record)
        except ScenarioError as exc:
            record["error"] = str(exc)
            return _error_response(StepError(400, "invalid_request_error", str(exc)))
        return await _respond(reply, stream=bool(body.get("stream")))

    async def count_tokens(request: Request) -> Response:
        raw = await request.body()
        recorder.add(_record_base(request, _loads_or_none(raw)) | {"kind": "count_tokens"})
        return JSONResponse({"input_tokens": max(1, len(raw) // 4)})

    async def list_models(request: Request) -> Response:
        recorder.add(_record_base(request, None) | {"kind": "models"})
        data = [_model(m) for m in MODEL_IDS]
        return JSONResponse(
            {"data": data, "has_more": False, "first_id": MODEL_IDS[0], "last_id": MODEL_IDS[-1]}
        )

    async def get_model(request: Request) -> Response:
        recorder.add(_record_base(request, None) | {"kind": "models"})
        return JSONResponse(_model(request.path_params["model_id"]))

    async def hello(request: Request) -> Response:
        # The CLI's connectivity probe (HEAD /api/hello) before the first request.
        recorder.add(_record_base(request, None) | {"kind": "hello"})
        return Response(status_code=200)

    async def fallback(request: Request) -> Response:
        recorder.add(_record_base(request, _loads_or_none(await request.body())) | {"kind": "unknown"})
        log.warning("scripted_model.unknown_request %s %s", request.method, request.url.path)
        return _error_response(
            StepError(404, "not_found_error", f"{request.method} {request.url.path} not found")
        )

    async def get_requests(_: Request) -> Response:
        return JSONResponse(recorder.snapshot())

    async def clear_requests(_: Request) -> Response:
        recorder.clear()
        return Response(status_code=204)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/api/hello", hello, methods=["GET", "HEAD"]),
            Route("/_scripted/requests", get_requests, methods=["GET"]),
            Route("/_scripted/requests", clear_requests, methods=["DELETE"]),
            Route("/_scripted/health", health, methods=["GET"]),
            Route("/{path:path}", fallback, methods=every_method),
        ]
    )
    app.state.recorder = recorder
    return app


def _plan_reply(body: dict[str, Any], request_chars: int, record: dict[str, Any]) -> Reply:
    model = str(body.get("model") or MODEL_IDS[0])
    schema = structured_side_query_schema(body)
    if schema is not None:
        record["kind"] = "structured_side_query"
        text = orjson.dumps(example_for_schema(schema)).decode()
        step = Step(content=(TextBlock(text),))
        return resolve_reply(step, model=model, turn_key="side", step_index=0, request_chars=request_chars)

    position = turn_position(body)
    scenario = _scenario_for(position.prompt_text, position.cwd, position.earlier_prompts)
    record.update(
        kind="conversation", scenario=scenario.name, step=position.step_index, prompt=position.prompt_text
    )
    return resolve_reply(
        scenario.step(position.step_index),
        model=model,
        turn_key=position.turn_key,
        step_index=position.step_index,
        request_chars=request_chars,
    )


def _scenario_for(prompt_text: str, cwd: str | None, earlier_prompts: tuple[str, ...]) -> Scenario:
    selector = select_scenario(prompt_text)
    if selector.inline is not None:
        return parse_scenario(selector.inline)
    return builtin_scenario(selector.name or "echo", prompt_text, cwd, earlier_prompts)


async def _respond(reply: Reply, *, stream: bool) -> Response:
    step = reply.step
    # "Before the first byte": the status line and headers wait too, as with a slow upstream.
    await _sleep_ms(step.delay_ms)
    if step.error is not None and step.stream_error_after_ms is None:
        return _error_response(step.error)
    if step.stream_error_after_ms is not None and not stream:
        # The CLI retries a broken stream without streaming; that retry fails too, or the scripted
        # failure would silently turn into a success.
        return _error_response(stream_error(step))
    if stream:
        return StreamingResponse(
            stream_reply(reply),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "request-id": reply.message_id},
        )
    # A paced step takes as long without streaming, so timing tests do not depend on the transport.
    await asyncio.sleep(paced_duration(reply))
    return JSONResponse(message_json(reply), headers={"request-id": reply.message_id})


async def _sleep_ms(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _error_response(error: StepError) -> Response:
    headers = {"retry-after": "0"} if error.status == 429 else None
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def _has_credentials(request: Request) -> bool:
    api_key = request.headers.get("x-api-key", "").strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return bool(api_key) or (scheme.lower() == "bearer" and bool(token.strip()))


def _record_base(request: Request, body: Any) -> dict[str, Any]:
    headers = {k: v for k, v in request.headers.items() if k not in _SECRET_HEADERS}
    log.debug("scripted_model.request %s %s %s", request.method, request.url.path, headers)
    return {
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": headers,
        "kind": "unknown",
        "body": body,
    }


def _loads_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2025-01-01T00:00:00Z"}
