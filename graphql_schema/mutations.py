"""Write side: each mutation answers with a union of its success type and the errors that can happen."""

from __future__ import annotations

from typing import Annotated

import strawberry

from api import errors
from api.runtime.policy import RunRequest
from graphql_schema.context import Info
from graphql_schema.errors import (
    NotFoundError,
    PolicyViolationError,
    RateLimitedError,
    SessionBusyError,
    ValidationError,
    not_found_error,
    policy_violation_error,
    rate_limited_error,
    session_busy_error,
    validation_error,
)
from graphql_schema.inputs import InterruptOutcome, StartRunInput
from graphql_schema.types import Run, Session
from graphql_schema.usage.types import BudgetExceededError, budget_exceeded_error


@strawberry.type(description="The run was queued; watch it with sessionEvents.")
class StartRunSuccess:
    run: Run = strawberry.field(description="The new run, QUEUED.")
    session: Session = strawberry.field(description="Its session: a new one, or the one named in the input.")


@strawberry.type(description="What became of the run.")
class InterruptRunSuccess:
    run: Run = strawberry.field(description="The run as it is now.")
    outcome: InterruptOutcome = strawberry.field(description="What the interrupt did.")


StartRunResult = Annotated[
    StartRunSuccess
    | ValidationError
    | NotFoundError
    | SessionBusyError
    | PolicyViolationError
    | RateLimitedError
    | BudgetExceededError,
    strawberry.union("StartRunResult", description="The started run, or why nothing was started."),
]
InterruptRunResult = Annotated[
    InterruptRunSuccess | NotFoundError,
    strawberry.union("InterruptRunResult", description="What the interrupt did, or that the run is unknown."),
]


def _request(data: StartRunInput) -> RunRequest:
    # Enum members are passed by name: each name equals its value, and strawberry.enum_value (which carries
    # the value's description) leaves `.value` typed as its wrapper for mypy.
    return RunRequest(
        prompt=data.prompt,
        session_id=str(data.session_id) if data.session_id is not None else None,
        title=data.title,
        model=data.model,
        fallback_model=data.fallback_model,
        system_prompt=data.system_prompt,
        system_prompt_preset=(
            {"append": data.system_prompt_preset.append} if data.system_prompt_preset is not None else None
        ),
        thinking=(
            {
                "mode": data.thinking.mode.name,
                "budget_tokens": data.thinking.budget_tokens,
                "display": data.thinking.display.name if data.thinking.display else None,
            }
            if data.thinking is not None
            else None
        ),
        effort=data.effort.name if data.effort else None,
        permission_mode=data.permission_mode.name if data.permission_mode else None,
        allowed_tools=data.allowed_tools,
        disallowed_tools=data.disallowed_tools,
        max_turns=data.max_turns,
        max_budget_usd=data.max_budget_usd,
        output_schema=data.output_schema,
        mcp_servers=data.mcp_servers,
        agents=[
            {
                "name": a.name,
                "description": a.description,
                "prompt": a.prompt,
                "tools": a.tools,
                "model": a.model,
            }
            for a in data.agents or []
        ],
        on_busy=data.on_busy.name,
    )


@strawberry.type(description="Control: start, continue and interrupt runs. Every action is audited.")
class Mutation:
    @strawberry.mutation(description="Send a prompt: a new session, or the next turn of an existing one.")
    async def start_run(
        self,
        info: Info,
        input: Annotated[StartRunInput, strawberry.argument(description="The prompt and options.")],
    ) -> StartRunResult:
        principal = info.context.require_principal()
        try:
            started = await info.context.services.run_control.start_run(principal, _request(input))
        except errors.ValidationFailed as exc:
            return validation_error(exc)
        except errors.NotFound as exc:
            return not_found_error(exc)
        except errors.SessionBusy as exc:
            return session_busy_error(exc)
        except errors.PolicyViolation as exc:
            return policy_violation_error(exc)
        except errors.RateLimited as exc:
            return rate_limited_error(exc)
        except errors.BudgetExceeded as exc:
            return budget_exceeded_error(exc)
        return StartRunSuccess(run=Run.from_model(started.run), session=Session.from_model(started.session))

    @strawberry.mutation(description="Stop a run: a running one is interrupted, a queued one never starts.")
    async def interrupt_run(
        self,
        info: Info,
        run_id: Annotated[strawberry.ID, strawberry.argument(description="The run to stop.")],
    ) -> InterruptRunResult:
        principal = info.context.require_principal()
        try:
            run, outcome = await info.context.services.run_control.interrupt_run(principal, str(run_id))
        except errors.NotFound as exc:
            return not_found_error(exc)
        return InterruptRunSuccess(run=Run.from_model(run), outcome=InterruptOutcome(outcome.value))
