"""Registering and deleting a tenant's webhooks: validated, vetted, written with their audit entry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from api import audit
from api.auth import Principal
from api.errors import NotFound, PolicyViolation, ValidationFailed
from api.settings import Settings
from api.webhooks.dispatcher import HOOK_EVENTS
from api.webhooks.ssrf import AllowList, BadTarget, UnsafeTarget, vet
from persistence.database import Database
from persistence.models import Webhook, utcnow
from persistence.repositories.webhooks import WebhookRepository

MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 500
MAX_URL_CHARS = 2000
MAX_WEBHOOKS_PER_TENANT = 20
FAILURE_MODES = ("OPEN", "CLOSED")


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    events: list[str]
    secret: str
    failure_mode: str | None = None


class WebhookRegistry:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.allow = AllowList.parse(settings.webhook_allowed_hosts)
        self.timeout = settings.webhook_timeout_seconds

    async def register(self, principal: Principal, request: WebhookRequest) -> Webhook:
        events = _events(request.events)
        if len(request.url) > MAX_URL_CHARS:
            raise ValidationFailed(f"the URL is longer than {MAX_URL_CHARS} characters", field="url")
        if not MIN_SECRET_CHARS <= len(request.secret) <= MAX_SECRET_CHARS:
            raise ValidationFailed(
                f"the secret must have {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters", field="secret"
            )
        if request.failure_mode is not None and request.failure_mode not in FAILURE_MODES:
            raise ValidationFailed("failureMode must be OPEN or CLOSED", field="failureMode")
        try:
            # Checked now for a clear answer, and again at every call (DNS answers change).
            async with asyncio.timeout(self.timeout):
                await vet(request.url, self.allow)
        except TimeoutError as exc:
            raise ValidationFailed("the URL's host did not resolve in time", field="url") from exc
        except BadTarget as exc:
            raise ValidationFailed(str(exc), field="url") from exc
        except UnsafeTarget as exc:
            raise PolicyViolation(exc.message, rule=exc.rule) from exc
        async with self.db.session() as session:
            repository = WebhookRepository(session)
            if len(await repository.list_for_tenant(principal.tenant_id)) >= MAX_WEBHOOKS_PER_TENANT:
                raise PolicyViolation(
                    f"a tenant may have at most {MAX_WEBHOOKS_PER_TENANT} webhooks", rule="webhook.limit"
                )
            webhook = await repository.create(
                webhook_id=str(uuid.uuid4()),
                tenant_id=principal.tenant_id,
                url=request.url.strip(),
                events=events,
                secret=request.secret,
                failure_mode=request.failure_mode,
                api_key_id=principal.api_key_id,
                at=utcnow(),
            )
            await audit.record(
                session,
                actor=principal,
                action="webhook.register",
                target_type="Webhook",
                target_id=webhook.id,
                details={"url": webhook.url, "events": events, "failureMode": request.failure_mode},
            )
            await session.commit()
        return webhook

    async def delete(self, principal: Principal, webhook_id: str) -> None:
        async with self.db.session() as session:
            if not await WebhookRepository(session).delete(webhook_id, tenant_id=principal.tenant_id):
                raise NotFound("Webhook", webhook_id)
            await audit.record(
                session, actor=principal, action="webhook.delete", target_type="Webhook", target_id=webhook_id
            )
            await session.commit()

    async def list(self, principal: Principal) -> Sequence[Webhook]:
        async with self.db.session() as session:
            return await WebhookRepository(session).list_for_tenant(principal.tenant_id)


def _events(events: list[str]) -> list[str]:
    if not events:
        raise ValidationFailed("name at least one hook event", field="events")
    unknown = sorted(set(events) - set(HOOK_EVENTS))
    if unknown:
        raise ValidationFailed(
            f"unknown hook events {unknown}; known: {', '.join(HOOK_EVENTS)}", field="events"
        )
    return [event for event in HOOK_EVENTS if event in events]
