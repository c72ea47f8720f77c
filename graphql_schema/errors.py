"""Typed errors: what a client can act on is part of the schema, not an `errors` entry."""

from __future__ import annotations

import strawberry

from api import errors


@strawberry.interface(description="Every expected failure of a mutation implements Error.")
class Error:
    code: str = strawberry.field(description="A stable, machine-readable code.")
    message: str = strawberry.field(description="A human-readable explanation, safe to show.")


@strawberry.type(description="The input was malformed or out of bounds; nothing was changed.")
class ValidationError(Error):
    field: str | None = strawberry.field(description="The input field at fault, if one is.")


@strawberry.type(description="The id does not name anything this caller can see.")
class NotFoundError(Error):
    resource: str = strawberry.field(description="The kind of thing looked for: Session, Run…")
    resource_id: strawberry.ID = strawberry.field(description="The id that was not found.")


@strawberry.type(description="The session has a run in progress and onBusy was REJECT.")
class SessionBusyError(Error):
    session_id: strawberry.ID = strawberry.field(description="The busy session.")
    active_run_id: strawberry.ID | None = strawberry.field(description="The run that is in progress.")


@strawberry.type(description="The server's policy does not allow what was asked.")
class PolicyViolationError(Error):
    rule: str = strawberry.field(description="The policy rule that refused it.")


@strawberry.type(description="Too many requests; try again later.")
class RateLimitedError(Error):
    retry_after_seconds: float = strawberry.field(description="How long to wait before trying again.")


def validation_error(exc: errors.ValidationFailed) -> ValidationError:
    return ValidationError(code=exc.code, message=exc.message, field=exc.field)


def not_found_error(exc: errors.NotFound) -> NotFoundError:
    return NotFoundError(
        code=exc.code, message=exc.message, resource=exc.resource, resource_id=strawberry.ID(exc.resource_id)
    )


def session_busy_error(exc: errors.SessionBusy) -> SessionBusyError:
    return SessionBusyError(
        code=exc.code,
        message=exc.message,
        session_id=strawberry.ID(exc.session_id),
        active_run_id=strawberry.ID(exc.active_run_id) if exc.active_run_id else None,
    )


def policy_violation_error(exc: errors.PolicyViolation) -> PolicyViolationError:
    return PolicyViolationError(code=exc.code, message=exc.message, rule=exc.rule)


def rate_limited_error(exc: errors.RateLimited) -> RateLimitedError:
    return RateLimitedError(code=exc.code, message=exc.message, retry_after_seconds=exc.retry_after_seconds)
