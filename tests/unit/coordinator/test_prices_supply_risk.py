"""Volume-weighted prices (value and quantity sums) and the EU 2017 supply risk from pooled
figures, each against a hand computation."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from coordinator import (
    BalanceRequest,
    CellStatus,
    NoisySum,
    PooledCell,
    PooledResult,
    assemble_balance,
    build_market_report,
    eu_sourcing_query,
    export_report,
    is_eu_sourcing,
    market_indicators,
    price_volatility,
    ratio_error,
    reconcile_balance,
    reference_inputs,
    region_table,
    vwap_figures,
    vwap_queries,
    vwap_series,
)
from crimmis_dpn.cli._report_html import render_report_html
from protocols import AggregateQuery, CoverageEntry, Measure
from tests.unit.coordinator.conftest import answer
from tests.unit.coordinator.test_balance import published, results

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PRICE_COVER = [CoverageEntry(commodity="cobalt", stages=["mining"], flows=["price"],
                             countries=["COD"])]


def pooled(query: AggregateQuery, per_node: list[list[float]], scale: float) -> PooledResult:
    """Pool the given per-node sums (public-key order) of three or more nodes."""
    from coordinator import pool_answers

    answers = [answer(query, f"n{i}", values, PRICE_COVER, scale=scale)
               for i, values in enumerate(per_node)]
    return PooledResult(query=query, status="completed", cells=pool_answers(query, answers),
                        nodes=[], created_at=NOW)


def test_vwap_queries_are_a_value_and_a_quantity_sum_at_half_the_epsilon() -> None:
    value, quantity = vwap_queries(commodity="cobalt", periods=["2024"], epsilon=0.4,
                                   price_bound=60_000.0, quantity_bound=12_000.0)
    assert value.measure is Measure.VALUE and quantity.measure is Measure.QUANTITY
    assert value.epsilon == quantity.epsilon == 0.2
    assert list(value.group_by) == ["contract_type", "period"]
    assert value.public_keys() == [("spot", "2024"), ("long_term", "2024")]
    # 60,000 USD/t x 12,000 t = 7.2e8 USD per unit-year; above 1e9 the protocol's cap holds
    assert value.bounds.unit_sum_bound == 7.2e8 and quantity.bounds.unit_sum_bound == 12_000.0
    big, _ = vwap_queries(commodity="cobalt", periods=["2024"], epsilon=0.4,
                          price_bound=200_000.0, quantity_bound=12_000.0)
    assert big.bounds.unit_sum_bound == 1e9


def test_vwap_is_sum_of_values_over_sum_of_quantities_per_contract_type() -> None:
    value_q, quantity_q = vwap_queries(commodity="cobalt", periods=["2024"], epsilon=1.0,
                                       price_bound=60_000.0, quantity_bound=1_000.0)
    # keys (spot, 2024), (long_term, 2024); three nodes (noise already in the figures)
    value = pooled(value_q, [[3.0e6, 8.0e6], [1.5e6, 2.0e6], [0.5e6, 6.0e6]], scale=1e4)
    quantity = pooled(quantity_q, [[100.0, 400.0], [50.0, 100.0], [10.0, 300.0]], scale=1.0)
    figures = {f.contract_type: f for f in vwap_figures(value, quantity)}
    # spot: 5.0e6 / 160 = 31,250; long-term: 16e6 / 800 = 20,000; all: 21e6 / 960 = 21,875
    assert math.isclose(figures["spot"].value or 0, 31_250.0)
    assert math.isclose(figures["long_term"].value or 0, 20_000.0)
    assert math.isclose(figures["all"].value or 0, 21_875.0)
    assert math.isclose(figures["all"].tonnes or 0, 960.0)
    # delta method for the spot ratio: var_v = 3 * 2 * 1e8, var_q = 3 * 2 * 1;
    # sd = sqrt(var_v / Q^2 + r^2 var_q / Q^2) = sqrt(6e8 + 31250^2 * 6) / 160 = 488.7
    spot_std = figures["spot"].std
    assert spot_std is not None and abs(spot_std - 488.7) < 0.1 * 488.7
    # the error bar comes from both noises: without the quantity noise it is much smaller
    only_value, std_v, _ = ratio_error(NoisySum(5.0e6, (1e4,) * 3), NoisySum(160.0, ()))
    assert only_value == 31_250.0 and std_v is not None and std_v < 0.5 * spot_std


def test_failed_price_queries_give_not_covered_prices_not_an_error() -> None:
    # Found by fuzzing: a balance with prices on a pool whose queries failed (no cells).
    value_q, quantity_q = vwap_queries(commodity="cobalt", periods=["2024"], epsilon=1.0,
                                       price_bound=60_000.0, quantity_bound=1_000.0)
    failed = [PooledResult(query=q, status="failed", cells=[], nodes=[],
                           created_at=datetime(2025, 1, 1, tzinfo=UTC), error="no node")
              for q in (value_q, quantity_q)]
    figures = vwap_figures(*failed)
    assert [f.contract_type for f in figures] == ["all"]  # no per-contract cells came back
    assert {f.status for f in figures} == {"not_covered"} and all(
        f.value is None for f in figures)


def test_a_ratio_with_a_non_positive_denominator_is_undefined() -> None:
    assert ratio_error(NoisySum(5.0, (1.0,)), NoisySum(-2.0, (1.0,))) == (None, None, None)
    # a denominator lost in its noise: more than 5% of draws <= 0, no error bar
    value, std, ci = ratio_error(NoisySum(5.0, (1.0,)), NoisySum(1.0, (1.0,)))
    assert value == 5.0 and std is None and ci is None


def test_monthly_vwap_gives_volatility_and_long_term_share_with_error_bars() -> None:
    months = ["2024-01", "2024-02", "2024-03", "2024-04"]
    value_q, quantity_q = vwap_queries(commodity="cobalt", periods=months, epsilon=1.0,
                                       price_bound=60_000.0, quantity_bound=1_000.0)
    # per month: spot 100 t, long-term 300 t over three nodes; all-contract VWAP
    # 100, 110, 99, 105 (x 1000 USD/t), spot and long-term at the same price
    prices = [100_000.0, 110_000.0, 99_000.0, 105_000.0]
    per_node = []
    for share in (0.5, 0.3, 0.2):
        values, tonnes = [], []
        for _contract, t in (("spot", 100.0), ("long_term", 300.0)):
            for p in prices:
                values.append(p * t * share)
                tonnes.append(t * share)
        per_node.append((values, tonnes))
    value = pooled(value_q, [v for v, _ in per_node], scale=1e3)
    quantity = pooled(quantity_q, [t for _, t in per_node], scale=0.5)
    series = vwap_series(value, quantity)
    by = {(i.name, i.scope, i.period): i for i in series}
    vol = by[("price_volatility", "World / all contracts", "2024-01/2024-04")]
    assert vol.value is not None and math.isclose(vol.value, price_volatility(prices))
    # priced tonnes carry ~0.4% relative noise per month (6 terms of scale 0.5 on 400 t),
    # so each log return ~0.6%: the volatility's error is of that order
    assert vol.std is not None and 0.002 < vol.std < 0.012
    share = by[("long_term_share", "World (all periods)", "2024")]
    assert share.value is not None and math.isclose(share.value, 0.75)  # 1200 / 1600 t
    assert share.std is not None and 0 < share.std < 0.01
    assert math.isclose(by[("vwap_usd_t", "World / spot", "2024-02")].value or 0, 110_000.0)


def test_balance_carries_its_volume_weighted_prices_to_the_report() -> None:
    request = BalanceRequest(commodity="cobalt", period="2024", price_epsilon=0.5)
    flows, stocks = results(request, {("COD", "mining", "production"):
                                      published(1000.0, [10.0] * 3)}, {})
    value_q, quantity_q = vwap_queries(commodity="cobalt", periods=["2024"], epsilon=0.5,
                                       price_bound=60_000.0, quantity_bound=12_000.0)
    value = pooled(value_q, [[3.0e6, 8.0e6], [1.5e6, 2.0e6], [0.5e6, 6.0e6]], scale=1e4)
    quantity = pooled(quantity_q, [[100.0, 400.0], [50.0, 100.0], [10.0, 300.0]], scale=1.0)
    balance = assemble_balance(request, flows, stocks, prices=(value, quantity))
    assert {f.contract_type for f in balance.prices} == {"spot", "long_term", "all"}
    assert value_q.query_id in balance.query_ids and quantity_q.query_id in balance.query_ids
    indicators = {(i.name, i.scope): i.value
                  for i in market_indicators(reconcile_balance(balance, draws=50))}
    assert math.isclose(indicators[("vwap_usd_t", "World / all")] or 0, 21_875.0)
    assert math.isclose(indicators[("long_term_share", "World")] or 0, 800 / 960)


def _sourcing(imports: dict[tuple[str, str], float]) -> PooledResult:
    """An EU sourcing result: the given (stage, partner) imports, every other cell 0."""
    q = eu_sourcing_query(commodity="cobalt", year=2024, epsilon=0.5, unit_sum_bound=12_000.0)
    cells = []
    for key in q.public_keys():
        v = imports.get((key[0], key[1]), 0.0)
        cells.append(PooledCell(key=list(key), status=CellStatus.PUBLISHED, value=v,
                                std=0.1, ci95=0.3, noise_scales=[0.1 / math.sqrt(2)]))
    return PooledResult(query=q, status="completed", cells=cells, nodes=[], created_at=NOW)


def _sr_balance():  # type: ignore[no-untyped-def]
    tiny = [1e-6]
    request = BalanceRequest(commodity="cobalt", period="2024")
    flows, stocks = results(request, {
        ("COD", "mining", "production"): published(600.0, tiny),
        ("CHN", "mining", "production"): published(200.0, tiny),
        ("FIN", "mining", "production"): published(200.0, tiny),
        ("DEU", "mining", "import"): published(800.0, tiny),
        ("DEU", "mining", "export"): published(0.0, tiny),
        ("DEU", "end_of_life", "recycling_input"): published(250.0, tiny),
    }, {})
    return assemble_balance(request, flows, stocks)


def test_eu_sourcing_query_and_shares() -> None:
    q = eu_sourcing_query(commodity="cobalt", year=2024, epsilon=0.5, unit_sum_bound=12_000.0)
    assert is_eu_sourcing(q) and set(q.countries or []) == region_table().eu27
    assert list(q.group_by) == ["stage", "partner_country"] and [str(f) for f in q.flows] == [
        "import"]
    report = build_market_report([_sr_balance()], sourcing=[_sourcing({
        ("mining", "COD"): 200.0, ("mining", "CHN"): 600.0,
        ("mining", "FIN"): 999.0,  # intra-EU: not supply to the EU
        ("mining", "AUS"): 0.2,  # within its noise (ci95 0.3): counted as zero
    })], draws=20, forecast=False)
    eu = next(i for i in report.indicators if i.name == "hhi_wgi_t_eu_sourcing"
              and i.scope == "EU27 / mining")
    assert "1 partner cells within their noise" in eu.note and "ILLUSTRATIVE" in eu.note


def test_supply_risk_worked_example_from_pooled_figures() -> None:
    """EU 2017: SR = [HHI_WGI,t(global) IR/2 + HHI_WGI,t(EU) (1 - IR/2)] (1 - EOL) SI_SR."""
    ref = reference_inputs()
    # shipped ILLUSTRATIVE inputs this example relies on
    assert (ref.wgi_scaled["COD"], ref.wgi_scaled["CHN"], ref.wgi_scaled["FIN"]) == (
        8.0, 5.8, 1.4)
    assert (ref.t("cobalt", "COD"), ref.t("cobalt", "CHN"), ref.t("cobalt", "FIN")) == (
        1.2, 1.0, 0.8)  # COD export prohibition; FIN an EU member
    assert ref.si_sr["cobalt"] == 0.9
    report = build_market_report([_sr_balance()], prices=[_sourcing({
        ("mining", "COD"): 200.0, ("mining", "CHN"): 600.0})], draws=20, forecast=False)
    got = {(i.name, i.scope): i for i in report.indicators}
    # global mining shares COD 0.6, CHN 0.2, FIN 0.2:
    # 0.36 * 8.0 * 1.2 + 0.04 * 5.8 * 1 + 0.04 * 1.4 * 0.8 = 3.456 + 0.232 + 0.0448 = 3.7328
    assert got[("hhi_wgi_t_global", "World / mining")].value == pytest.approx(3.7328)
    # EU sourcing: FIN production 200 + imports COD 200, CHN 600 -> 0.2, 0.2, 0.6:
    # 0.04 * 1.4 * 0.8 + 0.04 * 8.0 * 1.2 + 0.36 * 5.8 = 0.0448 + 0.384 + 2.088 = 2.5168
    assert got[("hhi_wgi_t_eu_sourcing", "EU27 / mining")].value == pytest.approx(2.5168)
    # IR EU27 mining: (800 - 0) / (200 + 800 - 0) = 0.8; EOL-RIR proxy 250 / (1000 + 250) = 0.2
    assert got[("import_reliance", "EU27 / mining")].value == pytest.approx(0.8)
    assert got[("secondary_share", "World")].value == pytest.approx(0.2)
    # SR = (3.7328 * 0.4 + 2.5168 * 0.6) * (1 - 0.2) * 0.9 = 3.0032 * 0.72 = 2.162304
    sr = got[("supply_risk", "EU27 / mining")]
    assert sr.value == pytest.approx(2.162304)
    assert "ILLUSTRATIVE" in sr.note
    assert any("ILLUSTRATIVE" in n for n in report.notes)
    # without the sourcing result only the global term exists, and SR is not computed
    plain = build_market_report([_sr_balance()], draws=20, forecast=False)
    assert not [i for i in plain.indicators if i.name == "supply_risk"]


def test_supply_risk_is_not_computed_without_a_wgi_for_every_supplier() -> None:
    report = build_market_report([_sr_balance()], sourcing=[_sourcing({
        ("mining", "COD"): 200.0, ("mining", "BRA"): 600.0})], draws=20, forecast=False)
    got = {(i.name, i.scope): i for i in report.indicators}
    eu = got[("hhi_wgi_t_eu_sourcing", "EU27 / mining")]
    assert eu.value is None and "no WGI value for BRA" in eu.note
    sr = got[("supply_risk", "EU27 / mining")]
    assert sr.value is None and "HHI_WGI,t(EU sourcing)" in sr.note
    assert np.isfinite(got[("hhi_wgi_t_global", "World / mining")].value or np.nan)


def test_report_exports_and_html_show_vwap_and_supply_risk(tmp_path: Path) -> None:
    months = ["2024-01", "2024-02", "2024-03"]
    value_q, quantity_q = vwap_queries(commodity="cobalt", periods=months, epsilon=1.0,
                                       price_bound=60_000.0, quantity_bound=1_000.0)
    value = pooled(value_q, [[30_000.0 * 10] * 6] * 3, scale=1e3)
    quantity = pooled(quantity_q, [[10.0] * 6] * 3, scale=0.5)
    report = build_market_report([_sr_balance()], prices=[value, quantity],
                                 sourcing=[_sourcing({("mining", "COD"): 200.0,
                                                      ("mining", "CHN"): 600.0})],
                                 draws=20, forecast=False)
    html = render_report_html(report)
    assert "volume-weighted average price by contract type" in html
    assert "supply_risk = 2.162" in html and "ILLUSTRATIVE" in html
    export_report(report, directory=tmp_path, formats=("csv",))
    with (tmp_path / "indicators.csv").open() as handle:
        names = {r["name"] for r in csv.DictReader(handle)}
    assert {"vwap_usd_t", "price_volatility", "long_term_share", "supply_risk",
            "hhi_wgi_t_eu_sourcing"} <= names
