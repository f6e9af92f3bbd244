"""The node owner's release policy (``<home>/policy.toml``): what this node will answer."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node._errors import NodeConfigError, QueryRefusedError
from protocols import (
    AggregateQuery,
    AnyQuery,
    BudgetLimit,
    Commodity,
    CoverageEntry,
    DataTier,
    Flow,
    QueryKind,
    describe_validation_error,
)

__all__ = [
    "ApprovalPolicy",
    "ApprovalRule",
    "BudgetPolicy",
    "Policy",
    "ReleasePolicy",
    "check_query",
    "load_policy",
    "policy_toml",
]


#: Parts of a synthetic release's evaluation a node may send with it.
EvaluationPart = Literal["quality", "risks", "dcr"]


class BudgetPolicy(BaseModel):
    """Privacy budget per accounting (calendar) year of the data, overall and per data tier.

    Spend is accounted as in :mod:`protocols._accounting`: pure-DP releases add their
    epsilons exactly; zCDP releases (Gaussian noise, secure aggregation) add their rho, and
    the year's guarantee at ``delta`` must stay within ``epsilon_per_year`` (and within
    ``tiers[tier]`` for a tier that has its own cap).
    """

    model_config = ConfigDict(extra="forbid")

    epsilon_per_year: Annotated[float, Field(gt=0, le=100)] = 10.0
    max_epsilon_per_release: Annotated[float, Field(gt=0, le=10)] = 2.0
    delta: Annotated[float, Field(ge=0, le=1e-3)] = Field(
        default=1e-6, description="delta of the yearly (epsilon, delta) guarantee; "
        "used only once zCDP releases are made (pure-DP spend needs none)")
    tiers: dict[DataTier, Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=dict,
        description="optional epsilon cap per data tier and year, within epsilon_per_year")

    def limits(self, tier: DataTier | str) -> dict[str, BudgetLimit]:
        """The limits a release of ``tier`` must meet: ``all`` and, if capped, the tier's."""
        limits = {"all": BudgetLimit(epsilon=self.epsilon_per_year, delta=self.delta)}
        cap = self.tiers.get(DataTier(tier))
        if cap is not None:
            limits[str(tier)] = BudgetLimit(epsilon=cap, delta=self.delta)
        return limits


class ReleasePolicy(BaseModel):
    """Which queries are answered at all."""

    model_config = ConfigDict(extra="forbid")

    min_contributors: Annotated[int, Field(ge=3)] = 3
    allowed_commodities: list[Commodity] = Field(default_factory=lambda: list(Commodity))
    allowed_flows: list[Flow] = Field(default_factory=lambda: list(Flow))
    allowed_kinds: list[QueryKind] = Field(default_factory=lambda: list(QueryKind))
    synthetic_tiers: list[DataTier] = Field(
        default_factory=list,
        description="data tiers this node answers with DP synthetic records (none: opt in)",
    )
    synthetic_evaluation: list[EvaluationPart] = Field(
        default_factory=lambda: list[EvaluationPart](("quality", "risks")),
        description="evaluation scores released with a synthetic table (not DP; rounded)",
    )


class ApprovalRule(BaseModel):
    """Jobs matching every given condition are handled in ``mode``; first match wins."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["automatic", "manual"]
    commodities: list[Commodity] | None = None
    flows: list[Flow] | None = None
    kinds: list[QueryKind | Literal["synthetic"]] | None = None
    tiers: list[DataTier] | None = None
    epsilon_above: Annotated[float | None, Field(ge=0)] = None

    def matches(self, query: AnyQuery, tier: DataTier) -> bool:
        """Whether a job with this query and tier meets every condition of the rule.

        A synthetic query has no flows: a rule naming flows matches it when it names them
        all (a synthetic table holds every flow of the declared coverage).
        """
        flows = set(query.flows) if isinstance(query, AggregateQuery) else set(Flow)
        return (
            (self.commodities is None or bool(set(query.commodities) & set(self.commodities)))
            and (self.flows is None or bool(flows & set(self.flows)))
            and (self.kinds is None or query.kind in self.kinds)
            and (self.tiers is None or tier in self.tiers)
            and (self.epsilon_above is None or query.epsilon > self.epsilon_above)
        )


class ApprovalPolicy(BaseModel):
    """Whether a job is answered automatically or held for a person at the node."""

    model_config = ConfigDict(extra="forbid")

    default: Literal["automatic", "manual"] = "automatic"
    rules: list[ApprovalRule] = Field(default_factory=list)

    def mode_for(self, query: AnyQuery, tier: DataTier) -> str:
        """``automatic`` or ``manual`` for a job."""
        for rule in self.rules:
            if rule.matches(query, tier):
                return rule.mode
        return self.default


class Policy(BaseModel):
    """The whole policy file."""

    model_config = ConfigDict(extra="forbid")

    budget: BudgetPolicy = Field(default_factory=BudgetPolicy)
    release: ReleasePolicy = Field(default_factory=ReleasePolicy)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    coverage: list[CoverageEntry] = Field(
        default_factory=list,
        description="public declaration of what this company reports on; records outside "
        "it are never released",
    )


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; raise :class:`NodeConfigError` naming the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NodeConfigError(f"policy file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise NodeConfigError(f"policy file {path} is not valid TOML: {exc}") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise NodeConfigError(
            f"policy file {path} is invalid: {describe_validation_error(exc)}"
        ) from exc


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _rule_toml(rule: ApprovalRule) -> str:
    lines = ["", "[[approval.rules]]", f'mode = "{rule.mode}"']
    for name in ("commodities", "flows", "kinds", "tiers"):
        values = getattr(rule, name)
        if values is not None:
            lines.append(f"{name} = {_toml_list([str(v) for v in values])}")
    if rule.epsilon_above is not None:
        lines.append(f"epsilon_above = {rule.epsilon_above}")
    return "\n".join(lines) + "\n"


def _tiers_toml(budget: BudgetPolicy) -> str:
    if not budget.tiers:
        return ("# Optional cap per data tier, within epsilon_per_year, e.g.\n"
                "# [budget.tiers]\n# bulk = 2.0\n")
    lines = "".join(f"{tier} = {cap}\n" for tier, cap in sorted(budget.tiers.items()))
    return f"[budget.tiers]\n{lines}"


def policy_toml(policy: Policy) -> str:
    """The policy as a commented TOML file (what ``dpn node init`` writes)."""
    b, r = policy.budget, policy.release
    rules = "".join(_rule_toml(rule) for rule in policy.approval.rules)
    coverage = "".join(
        f"""
[[coverage]]
commodity = "{entry.commodity}"
stages = {_toml_list([str(x) for x in entry.stages])}
flows = {_toml_list([str(x) for x in entry.flows])}
countries = {_toml_list(list(entry.countries))}
"""
        for entry in policy.coverage
    )
    return f"""# Release policy of this node. The node refuses any query that breaks it.

[budget]
# Pure-DP epsilon this node may spend per calendar year of the data (accounting period).
epsilon_per_year = {b.epsilon_per_year}
# Largest epsilon one release may cost.
max_epsilon_per_release = {b.max_epsilon_per_release}
# delta of the yearly (epsilon, delta) guarantee once zCDP (Gaussian) releases are made.
delta = {b.delta}
{_tiers_toml(b)}
[release]
# The pool must suppress cells with fewer contributing companies than this (at least 3).
min_contributors = {r.min_contributors}
allowed_commodities = {_toml_list([str(c) for c in r.allowed_commodities])}
allowed_flows = {_toml_list([str(f) for f in r.allowed_flows])}
allowed_kinds = {_toml_list([str(k) for k in r.allowed_kinds])}
# Tiers answered with DP synthetic records (e.g. ["bulk"]); empty: never.
synthetic_tiers = {_toml_list([str(t) for t in r.synthetic_tiers])}
# Evaluation scores sent with a synthetic table: "quality", "risks", "dcr" (not DP).
synthetic_evaluation = {_toml_list(list(r.synthetic_evaluation))}

[approval]
# "automatic": answer jobs at once; "manual": hold them until `dpn node approve ID`.
default = "{policy.approval.default}"
# Rules override the default; the first rule whose conditions all match wins, e.g.
# [[approval.rules]]
# mode = "manual"
# epsilon_above = 1.0        # also: commodities, flows, kinds, tiers = ["bulk"]
{rules}
# Declared coverage: PUBLIC statement of which commodity x stage x flow x country this
# company reports on (as in its annual report). Only records inside it are ever released,
# and the pool counts this company as a contributor to exactly these cells. Add one
# [[coverage]] block per commodity; `dpn node status` compares it with the imported data.
{coverage}"""


def check_query(policy: Policy, query: AggregateQuery) -> None:
    """Raise :class:`QueryRefusedError` if ``query`` breaks a rule of ``policy``."""
    release = policy.release
    if query.kind not in release.allowed_kinds:
        raise QueryRefusedError(f"query kind {query.kind} is not allowed", rule="allowed_kinds")
    for commodity in query.commodities:
        if commodity not in release.allowed_commodities:
            raise QueryRefusedError(
                f"commodity {commodity} is not allowed by this node's policy",
                rule="allowed_commodities",
            )
    for flow in query.flows:
        if flow not in release.allowed_flows:
            raise QueryRefusedError(
                f"flow {flow} is not allowed by this node's policy", rule="allowed_flows"
            )
    if query.min_contributors < release.min_contributors:
        raise QueryRefusedError(
            f"query suppresses cells below {query.min_contributors} contributors; "
            f"this node requires at least {release.min_contributors}",
            rule="min_contributors",
        )
    if query.epsilon > policy.budget.max_epsilon_per_release:
        raise QueryRefusedError(
            f"epsilon {query.epsilon} exceeds this node's maximum per release "
            f"({policy.budget.max_epsilon_per_release})",
            rule="max_epsilon_per_release",
        )
