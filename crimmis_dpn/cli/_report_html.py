"""A self-contained HTML report of a :class:`coordinator.MarketReport` (Plotly, inlined).

plotly.js is embedded once (``include_plotlyjs=True``): the file loads nothing from the
network when viewed.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from pydantic import BaseModel, ConfigDict

from coordinator import (
    FIGURES,
    CellStatus,
    CompanyConcentration,
    Level,
    MarketReport,
    ReconciledBalance,
    ReconciledFigure,
    SankeyData,
)

__all__ = ["CompanyConcentrationFile", "render_report_html", "write_report_html"]


class CompanyConcentrationFile(BaseModel):
    """What `dpn coordinator company-concentration --output` writes: two rounds' HHI cells."""

    model_config = ConfigDict(extra="forbid")

    sums: str
    squares: str
    cells: list[CompanyConcentration]


def _company_concentration(files: list[CompanyConcentrationFile]) -> list[str]:
    lines = []
    for file in files:
        for cell in file.cells:
            where = " / ".join(cell.key)
            if cell.hhi is None:
                lines.append(f"{where}: no HHI ({cell.reason or 'suppressed'}); rounds "
                             f"{file.sums} and {file.squares}")
                continue
            error = f" ± {cell.hhi.ci95:.3f}" if cell.hhi.ci95 is not None else ""
            clamp = f" (raw {cell.hhi.raw:.3f}, clamped to [1/n, 1])" if cell.hhi.clamped else ""
            lines.append(f"{where}: HHI {cell.hhi.value:.3f}{error}{clamp}; rounds "
                         f"{file.sums} and {file.squares}")
    return lines

_TABLE_FIGURES = ("production", "imports", "exports", "stock_change", "apparent_consumption",
                  "consumption", "recycling_input", "closing_stock")


def _cell(f: ReconciledFigure) -> str:
    if f.status is CellStatus.SUPPRESSED:
        return "suppr."
    if f.status is CellStatus.NOT_COVERED or f.value is None:
        return "·"
    text = f"{f.value:,.0f} ±{f.ci95 or 0:,.0f}"
    return text + (" (partial)" if f.partial else "") + (" (measured)" if f.measured else "")


def _balance_table(b: ReconciledBalance, level: Level) -> go.Figure | None:
    rows = [r for r in b.rows if r.level is level]
    if not rows:
        return None
    header = ["area", "stage", *(n.replace("_", " ") for n in _TABLE_FIGURES)]
    columns = [[r.area for r in rows], [r.stage for r in rows]]
    columns += [[_cell(r.figure(n)) for r in rows] for n in _TABLE_FIGURES]
    fig = go.Figure(go.Table(header={"values": header}, cells={"values": columns}))
    fig.update_layout(title=f"{b.commodity} {b.period}: {level} balances (t contained, "
                            "± 95% error after post-processing)",
                      height=120 + 28 * len(rows))
    return fig


def _sankey(s: SankeyData) -> go.Figure | None:
    if not s.links:
        return None
    index = {n: i for i, n in enumerate(s.nodes)}
    fig = go.Figure(go.Sankey(
        node={"label": s.nodes},
        link={"source": [index[link.source] for link in s.links],
              "target": [index[link.target] for link in s.links],
              "value": [link.value for link in s.links],
              "label": [link.figure for link in s.links]}))
    fig.update_layout(title=f"{s.commodity} {s.period}: material flows, {s.area} (t contained)")
    return fig


def _concentration(b: ReconciledBalance) -> go.Figure | None:
    rows = [r for r in b.rows if r.level is Level.COUNTRY and r.stage == "mining"
            and r.production.status is CellStatus.PUBLISHED]
    if not rows:
        return None
    rows.sort(key=lambda r: -(r.production.value or 0.0))
    fig = go.Figure(go.Bar(x=[r.area for r in rows], y=[r.production.value for r in rows],
                           error_y={"type": "data", "array": [r.production.ci95 for r in rows]}))
    fig.update_layout(title=f"{b.commodity} {b.period}: mining production by country "
                            "(concentration)", yaxis_title="t contained")
    return fig


def _series(report: MarketReport) -> list[go.Figure]:
    figs = []
    for f in report.forecasts:
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[p for p, _ in f.history], y=[v for _, v in f.history],
                                 name="history", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=[p.period for p in f.points], y=[p.value for p in f.points],
                                 name="forecast", mode="lines+markers",
                                 error_y={"type": "data", "symmetric": False,
                                          "array": [p.high - p.value for p in f.points],
                                          "arrayminus": [p.value - p.low for p in f.points]}))
        fig.update_layout(title=f"{f.commodity}: {f.series} forecast ({f.method})")
        figs.append(fig)
    titles = {"mean_price_usd_t": "monthly mean price (USD/t; not volume-weighted)",
              "vwap_usd_t": "volume-weighted average price by contract type (USD/t)"}
    by_chart: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for p in report.prices:
        if p.name in titles and p.value is not None:
            chart = by_chart.setdefault((str(p.commodity), p.name), {})
            chart.setdefault(p.scope, []).append(p)
    for (commodity, name), traces in by_chart.items():
        fig = go.Figure()
        for scope, points in sorted(traces.items()):
            points.sort(key=lambda p: p.period)
            fig.add_trace(go.Scatter(
                x=[p.period for p in points], y=[p.value for p in points], name=scope,
                error_y={"type": "data", "array": [1.96 * (p.std or 0) for p in points]},
                mode="lines+markers"))
        fig.update_layout(title=f"{commodity}: {titles[name]}")
        figs.append(fig)
    return figs


def _list(title: str, items: list[str]) -> str:
    if not items:
        return f"<h2>{html.escape(title)}</h2><p>none</p>"
    body = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    return f"<h2>{html.escape(title)}</h2><ul>{body}</ul>"


def render_report_html(report: MarketReport, *,
                       company_concentration: list[CompanyConcentrationFile] | None = None
                       ) -> str:
    """The report as one HTML document with every chart and plotly.js inlined.

    ``company_concentration``: company HHI cells from secure-aggregation rounds, listed in
    their own section (no company's figure is in them).
    """
    figures: list[go.Figure] = []
    for b in report.balances:
        for level in (Level.WORLD, Level.REGION, Level.COUNTRY):
            t = _balance_table(b, level)
            if t is not None:
                figures.append(t)
    figures += [f for f in (_sankey(s) for s in report.sankeys) if f is not None]
    figures += [f for f in (_concentration(b) for b in report.balances) if f is not None]
    figures += _series(report)
    charts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0))
              for i, fig in enumerate(figures)]
    indicators = [f"{i.commodity} {i.period} {i.scope}: {i.name} = "
                  f"{'n/a' if i.value is None else f'{i.value:.4g}'}"
                  + (f" ± {1.96 * i.std:.2g}" if i.std else "")
                  + (f" (raw {i.raw_value:.4g})" if i.raw_value is not None else "")
                  + (f" [{i.note}]" if i.note else "") for i in report.indicators]
    chokes = [f"{c.commodity} {c.stage} {c.period}: " + "; ".join(c.reasons)
              for c in report.choke_points]
    anomalies = [f"{a.commodity} {a.area} {a.stage} {a.period} ({a.kind}): {a.message}"
                 for a in report.anomalies]
    provenance = []
    for b in report.balances:
        p = b.provenance
        eps = ", ".join(f"{n}: " + "/".join(f"{y} {e:.3g}" for y, e in sorted(per.items()))
                        for n, per in sorted(p.epsilon_by_node.items()))
        provenance.append(f"{b.commodity} {b.period}: queries {', '.join(p.query_ids)}; "
                          f"nodes answered {', '.join(p.answered_nodes) or 'none'}; "
                          f"epsilon {eps or 'none'}; post-processing: {p.post_processing}")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>crimmis-dpn market report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}</style>",
        "</head><body><h1>crimmis-dpn market report</h1>",
        "<p>Pooled, differentially private figures after consistency post-processing. "
        f"Every figure shows its 95% error; figures: {', '.join(FIGURES)}. "
        "'suppr.': fewer than 3 contributing companies; 'partial': an aggregate that lacks "
        "suppressed members; 'measured': a world or region total also measured by its own "
        "query and combined with its countries. Reference data for the EU 2017 supply risk "
        "(WGI, trade, substitution) are ILLUSTRATIVE placeholders.</p>",
        _list("Notes", report.notes),
        *charts,
        _list("Indicators", indicators),
        *([_list("Company concentration (HHI by company, 0..1, from secure aggregation; "
                 "± = 95% noise interval)", _company_concentration(company_concentration))]
          if company_concentration else []),
        _list("Potential choke points", chokes),
        _list("Anomaly flags", anomalies),
        _list("Provenance", provenance),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report_html(report: MarketReport, path: Path, *,
                      company_concentration: list[CompanyConcentrationFile] | None = None
                      ) -> Path:
    """Write :func:`render_report_html` to ``path``."""
    path.write_text(render_report_html(report, company_concentration=company_concentration),
                    encoding="utf-8")
    return path
