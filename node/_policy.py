"""The node owner's release policy (``<home>/policy.toml``): what this node will answer."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node._errors import NodeConfigError, QueryRefusedError
from protocols import (
    AggregateQuery,
    Commodity,
    CoverageEntry,
    Flow,
    QueryKind,
    describe_validation_error,
)

__all__ = ["BudgetPolicy", "Policy", "ReleasePolicy", "check_query", "load_policy", "policy_toml"]


class BudgetPolicy(BaseModel):
    """Privacy budget: pure-DP epsilon per accounting (calendar) year of the data."""

    model_config = ConfigDict(extra="forbid")

    epsilon_per_year: Annotated[float, Field(gt=0, le=100)] = 10.0
    max_epsilon_per_release: Annotated[float, Field(gt=0, le=10)] = 2.0


class ReleasePolicy(BaseModel):
    """Which queries are answered at all."""

    model_config = ConfigDict(extra="forbid")

    min_contributors: Annotated[int, Field(ge=3)] = 3
    allowed_commodities: list[Commodity] = Field(default_factory=lambda: list(Commodity))
    allowed_flows: list[Flow] = Field(default_factory=lambda: list(Flow))
    allowed_kinds: list[QueryKind] = Field(default_factory=lambda: list(QueryKind))


class Policy(BaseModel):
    """The whole policy file."""

    model_config = ConfigDict(extra="forbid")

    budget: BudgetPolicy = Field(default_factory=BudgetPolicy)
    release: ReleasePolicy = Field(default_factory=ReleasePolicy)
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


def policy_toml(policy: Policy) -> str:
    """The policy as a commented TOML file (what ``dpn node init`` writes)."""
    b, r = policy.budget, policy.release
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

[release]
# The pool must suppress cells with fewer contributing companies than this (at least 3).
min_contributors = {r.min_contributors}
allowed_commodities = {_toml_list([str(c) for c in r.allowed_commodities])}
allowed_flows = {_toml_list([str(f) for f in r.allowed_flows])}
allowed_kinds = {_toml_list([str(k) for k in r.allowed_kinds])}

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
