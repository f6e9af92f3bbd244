"""``dpn audit report``: a self-contained HTML report of one node's privacy ledger.

Per accounting period: the budget, spend over time (cumulative proven epsilon after each
release), releases by purpose and by tier, and the verification's findings. plotly.js is
embedded once, so the file opens offline.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import plotly.graph_objects as go

from protocols import AuditReport, LedgerExport, Spend, guarantee

__all__ = ["render_audit_html", "write_audit_html"]


def _spend_chart(ledger: LedgerExport, period: int, delta: float,
                 budget: float | None) -> go.Figure:
    spend, times, totals = Spend(), [], []
    for entry in ledger.entries:
        if period in entry.accounting_periods:
            spend = spend + Spend.of(entry.cost)
            times.append(entry.recorded_at)
            totals.append(guarantee(spend, delta=delta))
    figure = go.Figure(go.Scatter(x=times, y=totals, mode="lines+markers", line_shape="hv",
                                  name="spent"))
    if budget is not None:
        figure.add_hline(y=budget, line_dash="dash", annotation_text=f"budget {budget:g}")
    figure.update_layout(title=f"{period}: epsilon spent over time", height=320,
                         yaxis_title="epsilon (proven)", margin={"t": 40, "b": 30})
    return figure


def _counts_table(title: str, counts: Counter[str]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
                   for k, v in counts.most_common())
    return f"<h4>{html.escape(title)}</h4><table><tr><th></th><th>releases</th></tr>{rows}</table>"


def render_audit_html(ledger: LedgerExport, report: AuditReport) -> str:
    """The report as one HTML page."""
    overall = ledger.budgets.get("all")
    delta = overall.delta if overall is not None else 1e-6
    verdict = ("all checks passed" if report.ok
               else f"{len(report.findings)} finding(s)")
    checks = "".join(
        f"<li>{name}: <b>{'yes' if ok else 'NO'}</b></li>" for name, ok in (
            ("chain intact", report.chain_intact), ("signatures valid", report.signatures_valid),
            ("receipts match", report.receipts_match), ("within budget", report.within_budget),
            ("published figures traceable", report.figures_traceable)))
    findings = "".join(
        f"<tr><td>{html.escape(f.code)}</td><td>{f.seq if f.seq is not None else ''}</td>"
        f"<td>{html.escape(f.query_id or '')}</td><td>{html.escape(f.message)}</td></tr>"
        for f in report.findings)
    sections, first = [], True
    for period in report.spend:
        entries = [e for e in ledger.entries if period.period in e.accounting_periods]
        chart = _spend_chart(ledger, period.period, delta, period.budget).to_html(
            full_html=False, include_plotlyjs=first)
        first = False
        sections.append(
            f"<h3>{period.period}</h3><p>{period.releases} releases; spent epsilon "
            f"{period.epsilon:.4g} (pure {period.epsilon_pure:.4g}, zCDP rho "
            f"{period.rho:.4g}) of budget "
            f"{'' if period.budget is None else f'{period.budget:g}'}"
            f" at delta {delta:g}: {'within' if period.within_budget else 'OVER'} budget.</p>"
            f"{chart}"
            + _counts_table("by purpose", Counter(e.purpose for e in entries))
            + _counts_table("by tier", Counter(e.tier for e in entries)))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Privacy audit: {html.escape(ledger.node_id)}</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}
table{{border-collapse:collapse;margin:.5rem 0}}td,th{{border:1px solid #ccc;padding:.2rem .5rem;
text-align:left}}</style></head><body>
<h1>Privacy audit of node {html.escape(ledger.node_id)}</h1>
<p>Checked {report.checked_at:%Y-%m-%d %H:%M} UTC: {report.entries} ledger entries,
{report.receipts} coordinator receipts: <b>{verdict}</b>.</p>
<ul>{checks}</ul>
{"<h2>Findings</h2><table><tr><th>code</th><th>entry</th><th>query</th><th>what</th></tr>"
 + findings + "</table>" if findings else ""}
<h2>Spend per accounting period</h2>
{"".join(sections) or "<p>No releases.</p>"}
</body></html>"""


def write_audit_html(ledger: LedgerExport, report: AuditReport, path: Path) -> Path:
    """Write the report to ``path``; return it."""
    path.write_text(render_audit_html(ledger, report), encoding="utf-8")
    return path
