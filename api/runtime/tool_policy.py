"""The operator's rules on tools, permission modes and budgets: deployment-wide in settings, set per
tenant in an optional policy file.

Callers may pre-approve only tools the rules allow (`allowedTools` entries run without asking), may pick
only permission modes the rules allow, and the operator's denied tools are denied in every run whatever
the caller asks. A tenant's tool rules can only narrow the deployment's: a policy file cannot widen them.

Budgets are figures, not rules: a tenant's `maxRunBudgetUsd`, `defaultRunBudgetUsd` and `dailyBudgetUsd`
replace the deployment's (MAX_RUN_BUDGET_USD, DEFAULT_RUN_BUDGET_USD, TENANT_DAILY_BUDGET_USD), up or
down; `null` there means none for that tenant.

Policy file (POLICY_FILE), JSON:

    {"tenants": {"acme": {"allowedTools": ["Read", "Grep", "Bash(npm test:*)"],
                          "permissionModes": ["DEFAULT", "PLAN"],
                          "deniedTools": ["WebFetch"],
                          "mcpServers": ["files"],
                          "dailyBudgetUsd": 50, "maxRunBudgetUsd": 5}}}

`mcpServers` names the servers of the operator's registry (MCP_SERVERS_FILE, api/runtime/mcp_registry.py)
the tenant may choose; absent: every registered one.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from api.errors import PolicyViolation
from api.runtime.mcp_registry import McpRegistry
from api.settings import Settings


@dataclass(frozen=True)
class ToolRules:
    """One layer of rules. `None` allow-lists mean "no restriction at this layer"."""

    allowed_tools: tuple[str, ...] | None = None
    permission_modes: tuple[str, ...] | None = None
    denied_tools: tuple[str, ...] = ()
    mcp_servers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Budgets:
    """What runs may cost, in US dollars; None: no limit of that kind."""

    # The largest maxBudgetUsd a caller may ask for.
    max_run_usd: float | None = None
    # The maxBudgetUsd of a run that asks for none.
    default_run_usd: float | None = None
    # What a tenant's runs may cost per UTC day.
    daily_usd: float | None = None
    # Where these figures come from, for error messages: "deployment" or "tenant NAME".
    source: str = "deployment"

    def run_budget(self, asked: float | None) -> float | None:
        """The max_budget_usd a run gets: what was asked (at most max_run_usd), else the default, which
        max_run_usd also caps (so a cap binds runs that ask for nothing)."""
        if asked is not None:
            if self.max_run_usd is not None and asked > self.max_run_usd:
                raise PolicyViolation(
                    f"maxBudgetUsd {asked:g} is above the {self.max_run_usd:g} USD a run may have here "
                    f"({self.source})",
                    rule=f"{self.source}.max_run_budget_usd",
                )
            return asked
        candidates = [v for v in (self.default_run_usd, self.max_run_usd) if v is not None]
        return min(candidates) if candidates else None


# A policy file's budget keys and the Budgets fields they set.
BUDGET_KEYS = {
    "maxRunBudgetUsd": "max_run_usd",
    "defaultRunBudgetUsd": "default_run_usd",
    "dailyBudgetUsd": "daily_usd",
}


@dataclass(frozen=True)
class ToolPolicy:
    """The rules in force for one tenant: the deployment's, then the tenant's; and the tenant's budgets."""

    layers: tuple[tuple[str, ToolRules], ...]
    mcp: McpRegistry = field(default_factory=McpRegistry)
    budgets: Budgets = field(default_factory=Budgets)

    def check_mcp_servers(self, names: list[str]) -> list[str]:
        """Registered names every layer allows, or a typed error naming the rule."""
        for name, rules in self.layers:
            self.mcp.check_names(names, rules.mcp_servers, name)
        return list(names)

    @property
    def denied_tools(self) -> list[str]:
        denied: list[str] = []
        for _, rules in self.layers:
            denied += [tool for tool in rules.denied_tools if tool not in denied]
        return denied

    def check_mode(self, mode: str) -> None:
        for name, rules in self.layers:
            if rules.permission_modes is not None and mode not in rules.permission_modes:
                raise PolicyViolation(
                    f"permission mode {mode} is not allowed here ({name} allows "
                    f"{', '.join(rules.permission_modes) or 'none'})",
                    rule=f"{name}.permission_modes",
                )

    def check_pre_approved(self, rules_asked: Iterable[str], field_name: str) -> None:
        for asked in rules_asked:
            for name, rules in self.layers:
                if rules.allowed_tools is not None and not _covered(asked, rules.allowed_tools):
                    raise PolicyViolation(
                        f"{field_name} may not pre-approve {asked!r} here ({name} allows "
                        f"{', '.join(rules.allowed_tools) or 'nothing'})",
                        rule=f"{name}.allowed_tools",
                    )


def _covered(asked: str, allowed: tuple[str, ...]) -> bool:
    """`Bash(npm test:*)` is covered by `Bash` or `Bash(npm test:*)`; `Bash` only by `Bash` (or `*`)."""
    tool = asked.split("(", 1)[0]
    return any(asked == rule or fnmatch.fnmatchcase(asked, rule) or rule == tool for rule in allowed)


@dataclass(frozen=True)
class PolicyBook:
    """The deployment's rules and every tenant's, loaded once at start."""

    deployment: ToolRules
    tenants: dict[str, ToolRules] = field(default_factory=dict)
    mcp: McpRegistry = field(default_factory=McpRegistry)
    budgets: Budgets = field(default_factory=Budgets)
    # Per tenant, only the budget figures its entry names (a None value: no limit for that tenant).
    tenant_budgets: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def for_tenant(self, tenant_name: str) -> ToolPolicy:
        layers: list[tuple[str, ToolRules]] = [("deployment", self.deployment)]
        if tenant_name in self.tenants:
            layers.append((f"tenant {tenant_name}", self.tenants[tenant_name]))
        return ToolPolicy(tuple(layers), mcp=self.mcp, budgets=self.budgets_for(tenant_name))

    def budgets_for(self, tenant_name: str) -> Budgets:
        overrides = self.tenant_budgets.get(tenant_name)
        if not overrides:
            return self.budgets
        return dataclasses.replace(self.budgets, source=f"tenant {tenant_name}", **overrides)

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyBook:
        return cls.load(
            allowed_tools=settings.tool_allowlist,
            permission_modes=settings.allowed_permission_modes,
            denied_tools=settings.tool_denylist,
            policy_file=settings.policy_file,
            mcp=McpRegistry.load(settings.mcp_servers_file),
            budgets=Budgets(
                max_run_usd=settings.max_run_budget_usd,
                default_run_usd=settings.default_run_budget_usd,
                daily_usd=settings.tenant_daily_budget_usd,
            ),
        )

    @classmethod
    def load(
        cls,
        *,
        allowed_tools: list[str] | None,
        permission_modes: list[str],
        denied_tools: list[str],
        policy_file: Path | None,
        mcp: McpRegistry | None = None,
        budgets: Budgets | None = None,
    ) -> PolicyBook:
        deployment = ToolRules(
            allowed_tools=tuple(allowed_tools) if allowed_tools is not None else None,
            permission_modes=tuple(permission_modes),
            denied_tools=tuple(denied_tools),
        )
        tenants: dict[str, ToolRules] = {}
        tenant_budgets: dict[str, dict[str, float | None]] = {}
        if policy_file is not None:
            try:
                data = orjson.loads(policy_file.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"POLICY_FILE {policy_file}: {exc}") from exc
            for tenant, raw in (data.get("tenants") or {}).items():
                where = f"POLICY_FILE {policy_file}: tenants.{tenant}"
                tenants[tenant] = _rules(raw, where)
                tenant_budgets[tenant] = _budgets(raw, where)
        registry = mcp or McpRegistry()
        for tenant, rules in tenants.items():
            unknown = [name for name in rules.mcp_servers or () if name not in registry.servers]
            if unknown:
                raise ValueError(
                    f"POLICY_FILE {policy_file}: tenants.{tenant}.mcpServers names unregistered "
                    f"server(s) {', '.join(unknown)}"
                )
        return cls(
            deployment, tenants, mcp=registry, budgets=budgets or Budgets(), tenant_budgets=tenant_budgets
        )


def _rules(raw: object, where: str) -> ToolRules:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    unknown = set(raw) - {"allowedTools", "permissionModes", "deniedTools", "mcpServers", *BUDGET_KEYS}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")

    def strings(key: str) -> tuple[str, ...] | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{where}.{key} must be a list of strings")
        return tuple(value)

    return ToolRules(
        allowed_tools=strings("allowedTools"),
        permission_modes=strings("permissionModes"),
        denied_tools=strings("deniedTools") or (),
        mcp_servers=strings("mcpServers"),
    )


def _budgets(raw: dict[str, object], where: str) -> dict[str, float | None]:
    """The budget figures a tenant's entry names; a present `null` lifts that limit for the tenant."""
    figures: dict[str, float | None] = {}
    for key, attribute in BUDGET_KEYS.items():
        if key not in raw:
            continue
        value = raw[key]
        if value is None:
            figures[attribute] = None
        elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            figures[attribute] = float(value)
        else:
            raise ValueError(f"{where}.{key} must be a positive number or null")
    return figures
