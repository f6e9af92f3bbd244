"""Material flows, anomaly flags, forecasts, exports round-trip and the HTML report."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pyarrow.parquet as pq

from coordinator import (
    Balance,
    BalanceRequest,
    MarketReport,
    NodeOutcome,
    NodeStatus,
    PooledCell,
    assemble_balance,
    build_market_report,
    export_report,
    forecast_series,
    material_flows,
    price_query,
    reconcile_balance,
)
from crimmis_dpn.cli._report_html import render_report_html
from tests.unit.coordinator.test_balance import published, results

S = [10.0] * 3


def balance(year: int, mining: float, *, node_eps: float = 1.0) -> Balance:
    """A small cobalt chain: mining in COD and AUS, refining in FIN, end of life in DEU."""
    request = BalanceRequest(commodity="cobalt", period=str(year))
    flows, stocks = results(request, {
        ("COD", "mining", "production"): published(mining, S),
        ("AUS", "mining", "production"): published(mining / 4, S),
        ("COD", "mining", "export"): published(mining * 0.9, S),
        ("FIN", "refining", "import"): published(mining, S),
        ("FIN", "refining", "production"): published(mining * 0.8, S),
        ("DEU", "end_of_life", "recycling_input"): published(50.0, S),
        ("DEU", "end_of_life", "production"): published(40.0, S),
        ("FIN", "refining", "waste"): published(20.0, S),
    }, {("FIN", "refining", str(year - 1)): published(100.0, [5.0] * 3),
        ("FIN", "refining", str(year)): published(100.0, [5.0] * 3)})
    b = assemble_balance(request, flows, stocks)
    outcomes = [NodeOutcome(node_id=f"n{i}", status=NodeStatus.ANSWERED, epsilon=node_eps)
                for i in range(3)]
    return b.model_copy(update={"nodes": outcomes,
                                "epsilon_by_node": {f"n{i}": {str(year): node_eps}
                                                    for i in range(3)}})


def test_material_flows_link_the_stages_with_published_figures() -> None:
    rb = reconcile_balance(balance(2024, 1000.0), draws=100)
    sankey = material_flows(rb)
    links = {(link.source, link.target): link.value for link in sankey.links}
    # mining apparent consumption, world: 1000 + 250 - 900 = 350
    assert math.isclose(links[("mining", "refining")], 350.0)
    # refining: 800 + 1000 - 0 - (100 - 100) = 1800
    assert math.isclose(links[("refining", "manufacturing")], 1800.0)
    assert math.isclose(links[("use", "end_of_life")], 50.0)
    assert math.isclose(links[("end_of_life", "refining")], 40.0)
    assert math.isclose(links[("refining", "waste")], 20.0)
    assert all(link.std is not None and link.std > 0 for link in sankey.links)


def test_forecast_interval_widens_with_the_dp_noise_of_the_history() -> None:
    years = [str(y) for y in range(2017, 2025)]
    values = [100.0, 108.0, 118.0, 125.0, 133.0, 144.0, 150.0, 161.0]
    quiet = forecast_series(commodity="cobalt", name="x", periods=years, values=values,
                            noise_std=[0.1] * 8)
    noisy = forecast_series(commodity="cobalt", name="x", periods=years, values=values,
                            noise_std=[30.0] * 8)
    assert [p.period for p in quiet.points] == ["2025", "2026", "2027", "2028", "2029"]
    width_q = quiet.points[0].high - quiet.points[0].low
    width_n = noisy.points[0].high - noisy.points[0].low
    assert width_n > 1.5 * width_q
    assert all(p.low <= p.value <= p.high for p in noisy.points)


def test_report_flags_history_anomalies_and_forecasts() -> None:
    balances = [balance(y, v) for y, v in zip(range(2019, 2025),
                                              [1000.0, 1010.0, 990.0, 1005.0, 995.0, 3000.0],
                                              strict=True)]
    report = build_market_report(balances, draws=100)
    assert len(report.balances) == 6 and len(report.forecasts) == 1
    history = [a for a in report.anomalies if a.kind == "history" and a.area == "COD"
               and a.figure == "production"]
    assert history and history[0].period == "2024" and history[0].score > 3.5
    names = {(i.name, i.scope) for i in report.indicators if i.period == "2024"}
    assert ("hhi_country", "World / mining") in names
    hhi = next(i for i in report.indicators if i.period == "2024" and i.name == "hhi_country"
               and i.scope == "World / mining")
    # COD 3000, AUS 750: shares 0.8, 0.2 -> 0.64 + 0.04 = 0.68 (post-processed values)
    assert hhi.value is not None and math.isclose(hhi.value, 0.68)


def test_exports_round_trip_with_provenance(tmp_path: Path) -> None:
    report = build_market_report([balance(2024, 1000.0, node_eps=0.5)], draws=100,
                                 forecast=False)
    files = export_report(report, directory=tmp_path)
    assert {p.name for p in files} == {
        "report.json", "figures.csv", "figures.parquet", "indicators.csv",
        "indicators.parquet", "provenance.csv", "provenance.parquet"}
    back = MarketReport.model_validate_json((tmp_path / "report.json").read_text())
    assert back == report
    with (tmp_path / "figures.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    cod = next(r for r in rows if r["area"] == "COD" and r["figure"] == "production")
    assert math.isclose(float(cod["value"]), 1000.0) and cod["status"] == "published"
    table = pq.read_table(tmp_path / "figures.parquet")
    assert table.num_rows == len(rows)
    meta = json.loads(table.schema.metadata[b"crimmis_dpn.provenance"])
    assert meta[0]["epsilon_by_node"] == {f"n{i}": {"2024": 0.5} for i in range(3)}
    prov = pq.read_table(tmp_path / "provenance.parquet").to_pylist()
    assert {(r["node_id"], r["accounting_year"], r["epsilon"]) for r in prov} == {
        (f"n{i}", "2024", 0.5) for i in range(3)}


def test_html_report_contains_the_charts_and_loads_nothing_external(tmp_path: Path) -> None:
    balances = [balance(y, 1000.0 + 10 * i) for i, y in enumerate(range(2020, 2025))]
    report = build_market_report(balances, draws=100)
    html = render_report_html(report)
    assert html.count('class="plotly-graph-div"') >= 5
    for trace in ('"type":"table"', '"type":"sankey"', '"type":"bar"', '"type":"scatter"'):
        assert trace in html
    # plotly.js is inlined once, and no tag pulls a resource from the network
    assert html.count("<script") > 1
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?(https?:)?//""",
                         html, re.IGNORECASE)


def test_price_query_is_a_monthly_mean_on_the_price_flow() -> None:
    q = price_query(commodity="cobalt", year=2024, epsilon=0.5, price_bound=60_000.0)
    assert str(q.kind) == "mean" and str(q.measure) == "price_usd_t"
    assert q.periods[0] == "2024-01" and len(q.public_keys()) == 12
    cell = PooledCell(key=["2024-03"], status="published", value=33_000.0, std=100.0)
    assert cell.value == 33_000.0
