"""Budget figures: settings for the deployment, POLICY_FILE per tenant, and what a run gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.errors import PolicyViolation
from api.runtime.policy import RunRequest, apply_policy
from api.runtime.tool_policy import PolicyBook
from api.settings import Settings


def book(tmp_path: Path, tenants: dict[str, object], **settings: object) -> tuple[PolicyBook, Settings]:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"tenants": tenants}))
    values = Settings(policy_file=policy, **settings)  # type: ignore[arg-type]
    return PolicyBook.from_settings(values), values


def test_tenant_figures_replace_the_deployments_up_down_or_off(tmp_path: Path) -> None:
    policy, _ = book(
        tmp_path,
        {"big": {"dailyBudgetUsd": 100}, "open": {"dailyBudgetUsd": None}, "tight": {"maxRunBudgetUsd": 0.5}},
        tenant_daily_budget_usd=5.0,
        max_run_budget_usd=2.0,
        default_run_budget_usd=1.0,
    )
    assert policy.budgets_for("big").daily_usd == 100
    assert policy.budgets_for("big").max_run_usd == 2.0
    assert policy.budgets_for("open").daily_usd is None
    assert policy.budgets_for("nobody").daily_usd == 5.0
    # A tenant's cap also caps the deployment's default.
    assert policy.budgets_for("tight").run_budget(None) == 0.5
    assert policy.budgets_for("nobody").run_budget(None) == 1.0
    assert policy.budgets_for("nobody").run_budget(1.5) == 1.5
    with pytest.raises(PolicyViolation) as refused:
        policy.budgets_for("tight").run_budget(0.75)
    assert refused.value.rule == "tenant tight.max_run_budget_usd"


def test_runs_get_the_default_or_the_cap_or_nothing(tmp_path: Path) -> None:
    only_cap, settings = book(tmp_path, {}, max_run_budget_usd=3.0)
    options = apply_policy(RunRequest(prompt="p"), settings, only_cap.for_tenant("t"))
    assert options.max_budget_usd == 3.0
    with pytest.raises(PolicyViolation, match="above the 3 USD"):
        apply_policy(RunRequest(prompt="p", max_budget_usd=4.0), settings, only_cap.for_tenant("t"))
    unlimited = apply_policy(RunRequest(prompt="p"), Settings())
    assert unlimited.max_budget_usd is None


@pytest.mark.parametrize("value", [0, -1, "5", True, [1]])
def test_a_bad_budget_figure_stops_the_start_with_its_place(tmp_path: Path, value: object) -> None:
    with pytest.raises(ValueError, match=r"tenants\.acme\.dailyBudgetUsd must be a positive number"):
        book(tmp_path, {"acme": {"dailyBudgetUsd": value}})
