"""Expected failures of the service. The GraphQL layer maps each to a typed error in the schema."""

from __future__ import annotations

from datetime import datetime


class ServiceError(Exception):
    """A failure the client caused or can act on; its message is safe to show."""

    code = "ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationFailed(ServiceError):
    code = "VALIDATION_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(ServiceError):
    """Unknown ids and other tenants' ids look the same: not found."""

    code = "NOT_FOUND"

    def __init__(self, resource: str, resource_id: str) -> None:
        super().__init__(f"{resource} {resource_id!r} not found")
        self.resource = resource
        self.resource_id = resource_id


class SessionBusy(ServiceError):
    code = "SESSION_BUSY"

    def __init__(self, session_id: str, active_run_id: str | None) -> None:
        super().__init__(f"session {session_id!r} has a run in progress")
        self.session_id = session_id
        self.active_run_id = active_run_id


class PolicyViolation(ServiceError):
    code = "POLICY_VIOLATION"

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class RateLimited(ServiceError):
    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"


class PermissionAlreadyDecided(ServiceError):
    """The request was decided already (by someone, by its deadline, or by its run ending)."""

    code = "PERMISSION_ALREADY_DECIDED"

    def __init__(self, request_id: str, status: str) -> None:
        super().__init__(f"permission request {request_id!r} is already {status}")
        self.request_id = request_id
        self.status = status


class SessionNotLive(ServiceError):
    """A live control (model, permission mode) needs the session's agent to be running somewhere."""

    code = "SESSION_NOT_LIVE"

    def __init__(self, session_id: str, message: str | None = None) -> None:
        super().__init__(message or f"session {session_id!r} has no live agent; start a run first")
        self.session_id = session_id


class CheckpointUnavailable(ServiceError):
    """The checkpoint exists, but the agent cannot rewind to it (or could not be reached to try)."""

    code = "CHECKPOINT_UNAVAILABLE"

    def __init__(self, checkpoint_id: str, reason: str) -> None:
        super().__init__(f"cannot rewind to checkpoint {checkpoint_id!r}: {reason}")
        self.checkpoint_id = checkpoint_id
        self.reason = reason


class BudgetExceeded(ServiceError):
    """The tenant's runs have spent its budget for the period; no run starts until it resets."""

    code = "BUDGET_EXCEEDED"

    def __init__(self, *, budget_usd: float, spent_usd: float, resets_at: datetime) -> None:
        super().__init__(
            f"the daily budget of {budget_usd:g} USD is spent ({spent_usd:.6g} USD today); "
            f"it resets at {resets_at.isoformat()}"
        )
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.resets_at = resets_at
