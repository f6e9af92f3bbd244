"""Models of post-processed balances, indicators and the market report (API and exports)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from coordinator._models import CellStatus, NodeOutcome, PriceFigure
from protocols import Commodity

__all__ = [
    "BASE_FIGURES",
    "DERIVED_FIGURES",
    "FIGURES",
    "AnomalyFlag",
    "ChokePoint",
    "Forecast",
    "ForecastPoint",
    "IndicatorValue",
    "Level",
    "MarketReport",
    "Provenance",
    "ReconciledBalance",
    "ReconciledFigure",
    "ReconciledRow",
    "SankeyData",
    "SankeyLink",
]

#: Figures measured by the balance's queries (the leaves of the post-processing).
BASE_FIGURES = ("production", "imports", "exports", "consumption", "recycling_input", "waste",
                "opening_stock", "closing_stock")
#: Figures derived by the balance identity.
DERIVED_FIGURES = ("stock_change", "apparent_consumption")
FIGURES = BASE_FIGURES + DERIVED_FIGURES


class Level(StrEnum):
    """Level of a row in the geographic hierarchy."""

    COUNTRY = "country"
    REGION = "region"  # a UN M49 region, or EU27
    WORLD = "world"


class ReconciledFigure(BaseModel):
    """A post-processed figure with its simulated error bar."""

    status: CellStatus
    value: float | None = None
    std: float | None = Field(default=None, description="rms error after post-processing")
    ci95: float | None = Field(default=None, description="95% quantile of the absolute error")
    raw_value: float | None = Field(default=None, description="noisy figure before")
    missing_members: list[str] = Field(
        default_factory=list,
        description="aggregates: member countries whose figure is suppressed, so not included",
    )
    measured: bool = Field(
        default=False,
        description="aggregates: measured by its own query too (raw_value is that measurement), "
                    "combined with its members' cells by weighted least squares",
    )

    @property
    def partial(self) -> bool:
        """An aggregate that lacks suppressed members."""
        return bool(self.missing_members)


class ReconciledRow(BaseModel):
    """One area (country, region or world) and stage of a post-processed balance."""

    level: Level
    area: str
    stage: str
    production: ReconciledFigure
    imports: ReconciledFigure
    exports: ReconciledFigure
    consumption: ReconciledFigure
    recycling_input: ReconciledFigure
    waste: ReconciledFigure
    opening_stock: ReconciledFigure
    closing_stock: ReconciledFigure
    stock_change: ReconciledFigure
    apparent_consumption: ReconciledFigure

    def figure(self, name: str) -> ReconciledFigure:
        """The figure called ``name`` (one of :data:`FIGURES`)."""
        if name not in FIGURES:
            raise KeyError(name)
        value: ReconciledFigure = getattr(self, name)
        return value


class Provenance(BaseModel):
    """Where a figure comes from: which queries, which nodes, what privacy budget."""

    query_ids: list[str]
    answered_nodes: list[str]
    nodes: list[NodeOutcome]
    epsilon_by_node: dict[str, dict[str, float]]
    unit_sum_bound: float | None = None
    stock_unit_bound: float | None = None
    post_processing: str = ""
    error_bar_draws: int = 0
    reference_data: list[str] = Field(default_factory=list)


class ReconciledBalance(BaseModel):
    """A balance after consistency post-processing, with regions and world."""

    commodity: Commodity
    period: str
    unit: str = "t contained"
    rows: list[ReconciledRow]
    provenance: Provenance
    prices: list[PriceFigure] = Field(
        default_factory=list, description="volume-weighted average prices of the year")

    def row(self, area: str, stage: str) -> ReconciledRow | None:
        """The row of ``area`` (ISO code, region name, ``EU27`` or ``World``) and stage."""
        for r in self.rows:
            if r.area == area and r.stage == stage:
                return r
        return None


class IndicatorValue(BaseModel):
    """One indicator value with what it was computed from."""

    name: str
    commodity: Commodity
    period: str
    scope: str = Field(description="area and stage, e.g. 'World / mining'")
    value: float | None
    raw_value: float | None = None
    std: float | None = None
    note: str = ""


class ChokePoint(BaseModel):
    """A commodity x stage flagged by the choke-point rules, with the reasons."""

    commodity: Commodity
    stage: str
    period: str
    reasons: list[str]


class AnomalyFlag(BaseModel):
    """A figure that breaks with its own history or with the balance identity."""

    commodity: Commodity
    area: str
    stage: str
    figure: str
    period: str
    kind: str = Field(description="history | identity")
    score: float
    message: str


class ForecastPoint(BaseModel):
    """One forecast year: point and 95% interval (includes model and DP noise)."""

    period: str
    value: float
    low: float
    high: float


class Forecast(BaseModel):
    """A rolling forecast of one series."""

    commodity: Commodity
    series: str
    method: str
    history: list[tuple[str, float]]
    points: list[ForecastPoint]


class SankeyLink(BaseModel):
    """A flow between two material-flow nodes, in tonnes contained."""

    source: str
    target: str
    value: float
    std: float | None = None
    figure: str = Field(description="which balance figure the link is")


class SankeyData(BaseModel):
    """Material flow mining -> refining -> manufacturing -> use -> end-of-life, ready to plot."""

    commodity: Commodity
    period: str
    area: str
    nodes: list[str]
    links: list[SankeyLink]
    note: str = ""


class MarketReport(BaseModel):
    """Everything the report and the exports show, for one or more commodities and years."""

    balances: list[ReconciledBalance]
    indicators: list[IndicatorValue]
    choke_points: list[ChokePoint]
    anomalies: list[AnomalyFlag]
    forecasts: list[Forecast]
    sankeys: list[SankeyData]
    prices: list[IndicatorValue] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
