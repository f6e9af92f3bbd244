"""The coordinator's API models: node registry views, pooled results and balances."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocols import AggregateQuery, AnyAnswer, Commodity, PeriodText, parse_period

__all__ = [
    "Balance",
    "BalanceFigure",
    "BalanceRequest",
    "BalanceRow",
    "CellStatus",
    "EnrolRequest",
    "MeasuredTotal",
    "NodeOutcome",
    "NodeStatus",
    "NodeView",
    "PooledCell",
    "PooledResult",
    "PriceFigure",
]


class EnrolRequest(BaseModel):
    """Enrol a node by URL; the operator confirms its key fingerprint out of band."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(:\d+)?/?$")]
    access_token: Annotated[str, Field(min_length=32)]
    expected_key_id: Annotated[str | None, Field(pattern=r"^[0-9a-f]{16}$")] = None


class NodeView(BaseModel):
    """An enrolled node as operators see it (no secrets)."""

    node_id: str
    display_name: str
    transport: str = "pull"
    url: str | None = None
    key_id: str
    public_key: str = Field(description="the node's registered Ed25519 key (base64); auditors "
                            "check ledger signatures with it")
    active: bool
    enrolled_at: datetime
    last_seen_at: datetime | None = None


class NodeStatus(StrEnum):
    """What became of a query at one node."""

    ANSWERED = "answered"
    REFUSED = "refused"  # the node's policy refused the query
    BUDGET_EXCEEDED = "budget_exceeded"
    UNREACHABLE = "unreachable"  # push mode: the node could not be reached
    INVALID = "invalid"  # answered, but the answer failed verification
    EXPIRED = "expired"  # pull mode: no answer by the query's deadline
    PENDING = "pending"  # the query is still running: no answer yet


class NodeOutcome(BaseModel):
    """One node's part in a pooled query."""

    node_id: str
    status: NodeStatus
    message: str | None = None
    epsilon: float | None = None
    signed: AnyAnswer | None = Field(default=None, exclude=True)


class CellStatus(StrEnum):
    """Whether a pooled cell is published."""

    PUBLISHED = "published"
    SUPPRESSED = "suppressed"  # fewer contributing companies than the minimum
    NOT_COVERED = "not_covered"  # no answering company reports on this cell


class PooledCell(BaseModel):
    """A pooled figure with its error bar; ``value`` is ``None`` unless published."""

    key: list[str]
    status: CellStatus
    reason: str | None = Field(
        default=None, description="why a cell is suppressed: min_contributors, dominance, "
        "differencing")
    value: float | None = None
    std: float | None = Field(default=None, description="standard deviation of the DP noise")
    ci95: float | None = Field(default=None, description="half-width of the 95% noise interval")
    noise_scales: list[float] = Field(
        default_factory=list, description="Laplace scales of the pooled noise terms"
    )


class PooledResult(BaseModel):
    """The pooled answer to a query: cells, and which nodes contributed."""

    query: AggregateQuery
    status: str = Field(description="queued | running | completed | failed")
    cells: list[PooledCell]
    nodes: list[NodeOutcome]
    created_at: datetime
    finished_at: datetime | None = None
    quorum: int = Field(default=1, description="answers needed for the query to complete")
    deadline: datetime | None = None
    error: str | None = Field(default=None, description="why the query failed")

    @property
    def answered(self) -> list[str]:
        """Ids of the nodes whose answers were pooled."""
        return [n.node_id for n in self.nodes if n.status is NodeStatus.ANSWERED]


class BalanceRequest(BaseModel):
    """Ask for the pooled commodity balance of one year."""

    model_config = ConfigDict(extra="forbid")

    commodity: Commodity
    period: PeriodText = Field(description="a calendar year, e.g. 2024")
    epsilon: Annotated[float, Field(ge=0.001, le=10)] = 1.0
    unit_sum_bound: Annotated[float | None, Field(ge=0.001, le=1e9)] = Field(
        default=None,
        description="flows: tonnes one site-year may contribute; default: per-commodity table",
    )
    stock_unit_bound: Annotated[float | None, Field(ge=0.001, le=1e9)] = Field(
        default=None,
        description="stocks: tonnes one site's closing stock may contribute; default: table",
    )
    min_contributors: Annotated[int, Field(ge=3, le=1000)] = 3
    purpose: Annotated[str, Field(min_length=3, max_length=500)] = "pooled commodity balance"
    price_epsilon: Annotated[float | None, Field(ge=0.001, le=10)] = Field(
        default=None,
        description="also pool the year's volume-weighted prices (spot and long-term) at this "
                    "extra epsilon; default: no price queries",
    )
    price_bound: Annotated[float | None, Field(ge=0.001, le=1e9)] = Field(
        default=None, description="prices: USD/t clip of a record's price; default: table",
    )
    totals: Literal["none", "world", "world+regions"] = Field(
        default="none",
        description="world and region totals measured by their own queries: none (default: "
                    "the flows' epsilon all on the country cells), world, or world+regions; "
                    "see docs/balances.md (Epsilon split) for the measured trade-off",
    )

    @field_validator("period")
    @classmethod
    def _a_year(cls, value: str) -> str:
        if parse_period(value).granularity != "year":
            raise ValueError(f"a balance covers a calendar year (e.g. 2024), not {value}")
        return value


class BalanceFigure(BaseModel):
    """One figure of a balance row."""

    status: CellStatus
    value: float | None = None
    std: float | None = None
    ci95: float | None = None
    noise_scales: list[float] = Field(
        default_factory=list,
        description="Laplace scales of the noise terms (public); used to propagate error bars",
    )


class BalanceRow(BaseModel):
    """Supply and use of one commodity at one stage in one country, tonnes contained."""

    country: str
    stage: str
    production: BalanceFigure
    imports: BalanceFigure
    exports: BalanceFigure
    consumption: BalanceFigure
    recycling_input: BalanceFigure
    waste: BalanceFigure
    opening_stock: BalanceFigure
    closing_stock: BalanceFigure
    stock_change: BalanceFigure
    apparent_consumption: BalanceFigure = Field(
        description="production + imports - exports - stock change"
    )


class MeasuredTotal(BaseModel):
    """A world or region total of one stage and base figure, measured by its own query.

    Not a sum of country rows: the query has no country grouping (world) or filters the
    region's countries (one cell per stage and flow), so its noise is independent of the
    country cells'. Consistency post-processing combines it with them (docs/balances.md).
    """

    level: str = Field(description="world | region")
    area: str = Field(description="World or a UN M49 region")
    stage: str
    figure: str = Field(description="a base figure: production, imports, ...")
    value: BalanceFigure
    query_id: str


class PriceFigure(BaseModel):
    """A pooled volume-weighted average price: sum(price x quantity) / sum(quantity)."""

    contract_type: str = Field(description="spot | long_term | all")
    period: str
    status: CellStatus
    value: float | None = Field(default=None, description="USD per tonne contained")
    std: float | None = Field(default=None, description="rms error (simulated, both noises)")
    ci95: float | None = None
    tonnes: float | None = Field(default=None, description="noisy priced tonnes (denominator)")
    tonnes_std: float | None = None
    tonnes_noise_scales: list[float] = Field(
        default_factory=list, description="Laplace scales of the priced tonnes' noise terms")


class Balance(BaseModel):
    """The pooled balance of one commodity and year, with its provenance."""

    commodity: Commodity
    period: str
    unit: str = "t contained"
    rows: list[BalanceRow]
    query_ids: list[str]
    nodes: list[NodeOutcome]
    epsilon_by_node: dict[str, dict[str, float]] = Field(
        description="epsilon each node spent on this balance, per accounting year"
    )
    unit_sum_bound: float
    stock_unit_bound: float
    totals: list[MeasuredTotal] = Field(
        default_factory=list,
        description="world and region totals measured by their own queries (not sums of rows)",
    )
    prices: list[PriceFigure] = Field(
        default_factory=list,
        description="volume-weighted average prices of the year by contract type, if asked",
    )
