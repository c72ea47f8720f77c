"""Calling a tenant's webhooks for one hook event and folding their answers into the hook output.

Each call: look up the tenant's webhooks for the event (so a deleted one is never called again, even by
a CLI started before), vet the resolved address, POST the signed JSON to that address, parse the answer.
A failure (timeout, connection error, refused address, non-2xx, bad JSON) is decided by the webhook's
failure mode: CLOSED denies the tool (PreToolUse) or stops the agent (other events); OPEN ignores it.
By default PreToolUse fails closed and every other event open.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from api import audit
from api.settings import Settings
from api.webhooks.answers import Answer, BadAnswer, Combined
from api.webhooks.signing import HEADER, signature_header
from api.webhooks.ssrf import AllowList, BadTarget, UnsafeTarget, VettedTarget, vet
from persistence.database import Database
from persistence.models import Webhook
from persistence.repositories.webhooks import WebhookRepository

log = structlog.get_logger(__name__)

HOOK_EVENTS = (
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "UserPromptSubmit",
    "Stop",
    "SubagentStart",
    "SubagentStop",
    "Notification",
    "PreCompact",
)
FAIL_CLOSED_BY_DEFAULT = frozenset({"PreToolUse"})
# Input fields lifted to the top of the body, or server paths a receiver has no use for.
_NOT_IN_DATA = frozenset(
    {"session_id", "transcript_path", "cwd", "hook_event_name", "tool_name", "tool_input"}
)
MAX_ANSWER_BYTES = 1024 * 1024
ACTOR = "system:webhooks"


@dataclass(frozen=True)
class HookCall:
    """One hook event of one session's CLI, as the SDK handed it over."""

    tenant_id: str
    session_id: str
    run_id: str | None
    hook_event: str
    input: dict[str, Any]
    tool_use_id: str | None

    @property
    def tool_name(self) -> str | None:
        name = self.input.get("tool_name")
        return name if isinstance(name, str) else None


@dataclass(frozen=True)
class _Endpoint:
    """What a call needs of a webhook row, detached from the database session."""

    id: str
    url: str
    secret: str
    failure_mode: str | None

    @classmethod
    def of(cls, row: Webhook) -> _Endpoint:
        return cls(row.id, row.url, row.secret, row.failure_mode)

    def fails_closed(self, hook_event: str) -> bool:
        if self.failure_mode is not None:
            return self.failure_mode == "CLOSED"
        return hook_event in FAIL_CLOSED_BY_DEFAULT


@dataclass(frozen=True)
class Delivery:
    endpoint: _Endpoint
    answer: Answer | None
    status: int | None
    error: str | None
    duration_ms: int
    failed_closed: bool


@dataclass(frozen=True)
class HookResult:
    output: dict[str, Any]
    fired: list[dict[str, Any]]  # HookFired payloads, one per webhook called


def request_body(call: HookCall) -> bytes:
    data = {key: value for key, value in call.input.items() if key not in _NOT_IN_DATA}
    body = {
        "hookEvent": call.hook_event,
        "sessionId": call.session_id,
        "runId": call.run_id,
        "toolName": call.tool_name,
        "toolInput": call.input.get("tool_input"),
        "data": data,
    }
    return orjson.dumps(body, default=str)


def _failure_answer(hook_event: str, webhook_id: str, error: str) -> Answer:
    reason = f"webhook {webhook_id} failed: {error}"
    if hook_event == "PreToolUse":
        return Answer(decision="deny", reason=reason)
    return Answer(continue_=False, reason=reason)


def unavailable_output(hook_event: str) -> dict[str, Any]:
    """The hook output when the webhooks could not be looked up: the event's default failure mode."""
    if hook_event not in FAIL_CLOSED_BY_DEFAULT:
        return {}
    combined = Combined()
    combined.add(_failure_answer(hook_event, "lookup", "the server could not read the webhooks"))
    return combined.to_output(hook_event)


async def post_signed(
    client: httpx.AsyncClient, vetted: VettedTarget, body: bytes, secret: str
) -> tuple[int, bytes]:
    """POST the signed body to the vetted address; the status and at most MAX_ANSWER_BYTES of answer."""
    target = vetted.target
    url = httpx.URL(target.url)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "claude-agent-graphql-api-webhooks",
        HEADER: signature_header(secret, body, int(time.time())),
    }
    extensions: dict[str, Any] = {}
    if url.host != str(vetted.address):
        # Connect to the address that was checked, not to whatever a second lookup returns;
        # the name stays in Host and in TLS (SNI and certificate check).
        headers["Host"] = url.netloc.decode("ascii")
        url = url.copy_with(host=str(vetted.address))
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
    request = client.build_request("POST", url, content=body, headers=headers, extensions=extensions)
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise BadAnswer("the answer is too large")
            chunks.append(chunk)
    finally:
        await response.aclose()
    return response.status_code, b"".join(chunks)


class WebhookDispatcher:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.timeout = settings.webhook_timeout_seconds
        self.allow = AllowList.parse(settings.webhook_allowed_hosts)
        # No proxies from the environment (they would bypass the address check), no redirects, and no
        # kept-alive connections: a connection to a vetted IP must never serve another host name.
        self._client = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            timeout=None,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def events_for(self, tenant_id: str, session: AsyncSession | None = None) -> tuple[str, ...]:
        """The hook events the tenant's webhooks want: the CLI gets matchers for these only. Read in
        `session` when given (a transaction under way), else in one of its own."""
        if session is None:
            async with self.db.session() as own:
                lists = await WebhookRepository(own).events_of_tenant(tenant_id)
        else:
            lists = await WebhookRepository(session).events_of_tenant(tenant_id)
        wanted = {event for events in lists for event in events}
        return tuple(event for event in HOOK_EVENTS if event in wanted)

    async def dispatch(self, call: HookCall) -> HookResult:
        async with self.db.session() as session:
            endpoints = [
                _Endpoint.of(row)
                for row in await WebhookRepository(session).for_event(call.tenant_id, call.hook_event)
            ]
        if not endpoints:
            return HookResult({}, [])
        body = request_body(call)
        deliveries = await asyncio.gather(*(self._deliver(call, endpoint, body) for endpoint in endpoints))
        combined = Combined()
        for delivery in deliveries:
            if delivery.answer is not None:
                combined.add(delivery.answer)
            elif delivery.failed_closed:
                combined.add(
                    _failure_answer(call.hook_event, delivery.endpoint.id, delivery.error or "failed")
                )
        output = combined.to_output(call.hook_event)
        await self._audit(call, deliveries)
        return HookResult(output, [self._fired(call, delivery) for delivery in deliveries])

    async def _deliver(self, call: HookCall, endpoint: _Endpoint, body: bytes) -> Delivery:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer: Answer | None = None
        status: int | None = None
        error: str | None = None
        try:
            # One deadline for everything: resolving, connecting, sending, reading.
            async with asyncio.timeout(self.timeout):
                vetted = await vet(endpoint.url, self.allow)
                status, content = await post_signed(self._client, vetted, body, endpoint.secret)
            if not 200 <= status < 300:
                error = f"the webhook answered HTTP {status}"
            else:
                answer = Answer.parse(orjson.loads(content)) if content.strip() else Answer()
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except UnsafeTarget as exc:
            error = exc.message
        except (BadTarget, BadAnswer) as exc:
            error = str(exc)
        except orjson.JSONDecodeError:
            error = "the answer is not JSON"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = int((loop.time() - started) * 1000)
        failed_closed = answer is None and endpoint.fails_closed(call.hook_event)
        if error is not None:
            log.warning(
                "webhook.call_failed",
                webhook_id=endpoint.id,
                hook_event=call.hook_event,
                error=error,
                failed_closed=failed_closed,
            )
        return Delivery(endpoint, answer, status, error, duration_ms, failed_closed)

    def _fired(self, call: HookCall, delivery: Delivery) -> dict[str, Any]:
        answer = delivery.answer
        data: dict[str, Any] = {
            "webhookId": delivery.endpoint.id,
            "toolUseId": call.tool_use_id,
            "ok": answer is not None,
            "httpStatus": delivery.status,
            "durationMs": delivery.duration_ms,
        }
        if answer is not None:
            data.update(
                decision=answer.decision,
                reason=answer.reason,
                additionalContext=answer.additional_context,
                continue_=answer.continue_,
                updatedInput=answer.updated_input,
            )
            data["continue"] = data.pop("continue_")
        else:
            data.update(error=delivery.error, failedClosed=delivery.failed_closed)
        return {"hook_event": call.hook_event, "tool_name": call.tool_name, "data": data}

    async def _audit(self, call: HookCall, deliveries: list[Delivery]) -> None:
        try:
            async with self.db.session() as session:
                for delivery in deliveries:
                    await audit.record(
                        session,
                        actor=ACTOR,
                        tenant_id=call.tenant_id,
                        action="webhook.call",
                        target_type="Webhook",
                        target_id=delivery.endpoint.id,
                        details={
                            "sessionId": call.session_id,
                            "runId": call.run_id,
                            "hookEvent": call.hook_event,
                            "toolName": call.tool_name,
                            "ok": delivery.answer is not None,
                            "httpStatus": delivery.status,
                            "decision": delivery.answer.decision if delivery.answer else None,
                            "error": delivery.error,
                            "failedClosed": delivery.failed_closed,
                            "durationMs": delivery.duration_ms,
                        },
                    )
                await session.commit()
        except Exception:
            # The agent must not wait on the audit trail; the HookFired event still records the call.
            log.exception("webhook.audit_failed", hook_event=call.hook_event)
