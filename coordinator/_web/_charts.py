"""Plotly figures of the dashboard, as ``<div>`` fragments (plotly.js is served separately)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from coordinator._market_models import (
    Forecast,
    IndicatorValue,
    Level,
    ReconciledBalance,
    SankeyData,
)
from coordinator._models import Balance, CellStatus

__all__ = [
    "balance_chart",
    "concentration_chart",
    "div",
    "epsilon_chart",
    "forecast_chart",
    "import_reliance_chart",
    "price_chart",
    "sankey_chart",
]

_CONFIG = {"displaylogo": False, "responsive": True}
_FIGURES = (("production", "production"), ("imports", "imports"), ("exports", "exports"),
            ("stock_change", "stock change"), ("apparent_consumption", "apparent consumption"))


def div(fig: go.Figure, name: str, height: int = 380) -> str:
    """The figure as an HTML fragment with a stable id (``chart-NAME``)."""
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 60},
                      template="plotly_white")
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                           config=_CONFIG))


def epsilon_chart(spent: dict[str, dict[str, float]]) -> go.Figure:
    """Epsilon each node's answers stated, per accounting year (spent only)."""
    years = sorted({y for per in spent.values() for y in per})
    nodes = sorted(spent)
    fig = go.Figure([go.Bar(name=year, y=nodes, x=[spent[n].get(year, 0.0) for n in nodes],
                            orientation="h") for year in years])
    fig.update_layout(title="Privacy budget spent per node (epsilon, by accounting year)",
                      xaxis_title="epsilon spent", barmode="group")
    return fig


def balance_chart(balance: Balance) -> go.Figure:
    """Published balance figures per country and stage, with 95% error bars."""
    fig = go.Figure()
    labels = [f"{r.country} / {r.stage}" for r in balance.rows]
    for name, label in _FIGURES:
        values, errors = [], []
        for row in balance.rows:
            figure = getattr(row, name)
            ok = figure.status is CellStatus.PUBLISHED and figure.value is not None
            values.append(figure.value if ok else None)
            errors.append(figure.ci95 if ok else None)
        fig.add_trace(go.Bar(name=label, x=labels, y=values,
                             error_y={"type": "data", "array": errors, "visible": True}))
    fig.update_layout(title=f"{balance.commodity} {balance.period}: pooled balance "
                            f"({balance.unit}, ± 95% noise interval)", barmode="group",
                      yaxis_title=balance.unit)
    return fig


def concentration_chart(b: ReconciledBalance) -> go.Figure | None:
    """Mining production by country after post-processing (concentration), with errors."""
    rows = [r for r in b.rows if r.level is Level.COUNTRY and r.stage == "mining"
            and r.production.status is CellStatus.PUBLISHED]
    if not rows:
        return None
    rows.sort(key=lambda r: -(r.production.value or 0.0))
    fig = go.Figure(go.Bar(x=[r.area for r in rows], y=[r.production.value for r in rows],
                           error_y={"type": "data", "array": [r.production.ci95 for r in rows]}))
    fig.update_layout(title=f"{b.commodity} {b.period}: mining production by country",
                      yaxis_title=b.unit)
    return fig


def import_reliance_chart(indicators: Sequence[IndicatorValue]) -> go.Figure | None:
    """Import reliance by area and stage (clamped to 0..1; raw value in the hover)."""
    points = [i for i in indicators if i.name == "import_reliance" and i.value is not None]
    if not points:
        return None
    fig = go.Figure(go.Bar(x=[i.scope for i in points], y=[i.value for i in points],
                           customdata=[i.raw_value for i in points],
                           hovertemplate="%{x}: %{y:.2f} (raw %{customdata:.3g})"))
    fig.update_layout(title="Import reliance (net imports / apparent consumption)",
                      yaxis={"range": [0, 1], "title": "share"})
    return fig


def sankey_chart(s: SankeyData) -> go.Figure | None:
    """Material flow mining -> refining -> ... -> end of life."""
    if not s.links:
        return None
    index = {n: i for i, n in enumerate(s.nodes)}
    fig = go.Figure(go.Sankey(
        node={"label": s.nodes},
        link={"source": [index[x.source] for x in s.links],
              "target": [index[x.target] for x in s.links],
              "value": [x.value for x in s.links], "label": [x.figure for x in s.links]}))
    fig.update_layout(title=f"{s.commodity} {s.period}: material flows, {s.area} (t contained)")
    return fig


def forecast_chart(f: Forecast) -> go.Figure:
    """History and forecast with its 95% interval."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p for p, _ in f.history], y=[v for _, v in f.history],
                             name="history", mode="lines+markers"))
    fig.add_trace(go.Scatter(
        x=[p.period for p in f.points], y=[p.value for p in f.points], name="forecast",
        mode="lines+markers",
        error_y={"type": "data", "symmetric": False,
                 "array": [p.high - p.value for p in f.points],
                 "arrayminus": [p.value - p.low for p in f.points]}))
    fig.update_layout(title=f"{f.commodity}: {f.series} forecast ({f.method}, 95% interval)")
    return fig


def price_chart(prices: Sequence[IndicatorValue]) -> go.Figure | None:
    """Monthly mean prices with 95% noise intervals."""
    if not prices:
        return None
    points = sorted(prices, key=lambda p: p.period)
    fig = go.Figure(go.Scatter(x=[p.period for p in points], y=[p.value for p in points],
                               error_y={"type": "data",
                                        "array": [1.96 * (p.std or 0.0) for p in points]},
                               mode="lines+markers"))
    fig.update_layout(title="Monthly mean price (USD/t, not volume-weighted)")
    return fig
