"""The balance: the identity holds for every published row; suppression propagates."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from coordinator import (
    BALANCE_FLOWS,
    BalanceRequest,
    CellStatus,
    NodeOutcome,
    NodeStatus,
    PooledCell,
    PooledResult,
    assemble_balance,
    balance_epsilon,
    balance_queries,
    total_area,
    total_queries,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def published(value: float, scales: list[float]) -> PooledCell:
    return PooledCell(key=[], status=CellStatus.PUBLISHED, value=value,
                      std=math.sqrt(sum(2 * b * b for b in scales)), ci95=1.0,
                      noise_scales=scales)


def results(request: BalanceRequest, flow_values: dict[tuple[str, str, str], PooledCell],
            stock_values: dict[tuple[str, str, str], PooledCell]
            ) -> tuple[PooledResult, PooledResult]:
    flows_q, stocks_q = balance_queries(request)

    def cells(q, values):  # type: ignore[no-untyped-def]
        out = []
        for key in q.public_keys():
            cell = values.get(key)
            out.append(cell.model_copy(update={"key": list(key)}) if cell
                       else PooledCell(key=list(key), status=CellStatus.NOT_COVERED))
        return out

    return (PooledResult(query=flows_q, status="completed", cells=cells(flows_q, flow_values),
                         nodes=[], created_at=NOW),
            PooledResult(query=stocks_q, status="completed", cells=cells(stocks_q, stock_values),
                         nodes=[], created_at=NOW))


def _charged(*queries) -> dict[int, float]:  # type: ignore[no-untyped-def]
    charged = {2024: 0.0, 2023: 0.0}
    for q in queries:
        for year in q.accounting_periods():
            charged[year] += q.epsilon
    return charged


def test_balance_queries_split_the_epsilon_and_cover_the_previous_year() -> None:
    request = BalanceRequest(commodity="cobalt", period="2024", epsilon=3.0)
    assert request.totals == "none"
    flows, stocks = balance_queries(request)
    # default: countries only, flows 2/3, stocks 1/3, no world or region query
    assert total_queries(request) == []
    assert math.isclose(flows.epsilon, 2.0) and math.isclose(stocks.epsilon, 1.0)
    charged = _charged(flows, stocks)
    assert math.isclose(charged[2024], 3.0) and math.isclose(charged[2023], 1.0)
    assert flows.periods == ["2024"] and stocks.periods == ["2023", "2024"]
    assert flows.bounds.unit_sum_bound == 12_000.0
    assert stocks.bounds.unit_sum_bound == 1_500.0  # stocks: a few months of output
    assert balance_epsilon(flows, stocks) == 3.0
    with pytest.raises(ValueError, match="calendar year"):
        balance_queries(BalanceRequest(commodity="cobalt", period="2024-Q1"))


@pytest.mark.parametrize(("totals", "world", "region"), [
    ("world", 1.0, None),  # countries 1/3, world 1/3, stocks 1/3
    ("world+regions", 0.5, 0.1),  # countries 1/3, world 1/6, regions 1/30 each, stocks 1/3
])
def test_measured_totals_take_their_share_from_the_country_cells(
        totals: str, world: float, region: float | None) -> None:
    request = BalanceRequest.model_validate({"commodity": "cobalt", "period": "2024",
                                             "epsilon": 3.0, "totals": totals})
    flows, stocks = balance_queries(request)
    queries = total_queries(request)
    assert math.isclose(flows.epsilon, 1.0) and math.isclose(stocks.epsilon, 1.0)
    expected = [("world", "World")] + ([] if region is None else [
        ("region", r) for r in ("Africa", "Americas", "Asia", "Europe", "Oceania")])
    assert [total_area(q) for q in queries] == expected
    assert math.isclose(queries[0].epsilon, world)
    assert all(math.isclose(q.epsilon, region or 0.0) for q in queries[1:])
    charged = _charged(flows, stocks, *queries)
    assert math.isclose(charged[2024], 3.0) and math.isclose(charged[2023], 1.0)
    assert balance_epsilon(flows, stocks) == 3.0  # stored pairs of every split are read back
    with pytest.raises(ValueError, match="totals"):
        BalanceRequest.model_validate({"commodity": "cobalt", "period": "2024",
                                       "totals": "regions"})


def test_total_queries_measure_the_world_without_and_regions_with_a_country_filter() -> None:
    world, africa, *_ = total_queries(BalanceRequest(commodity="cobalt", period="2024",
                                                     totals="world+regions"))
    assert world.countries is None and africa.countries is not None
    for q in (world, africa):
        assert list(q.group_by) == ["stage", "flow"] and list(q.flows) == BALANCE_FLOWS
        assert len(q.public_keys()) == 5 * 6  # one cell per stage and flow
    assert {"COD", "ZMB", "ZAF"} <= set(africa.countries) and "DEU" not in africa.countries
    assert len(africa.countries) == len(set(africa.countries)) == 60


def test_a_small_epsilon_measures_countries_only_with_the_default_split() -> None:
    request = BalanceRequest(commodity="cobalt", period="2024", epsilon=0.0029,
                             totals="world+regions")
    flows, stocks = balance_queries(request)
    assert total_queries(request) == []  # a region's share would be under 1e-4
    assert math.isclose(flows.epsilon, 0.0029 * 2 / 3)
    assert math.isclose(balance_epsilon(flows, stocks) or 0.0, 0.0029)
    assert balance_epsilon(flows.model_copy(update={"epsilon": 0.5}), stocks) is None
    # the world alone has no such floor
    world = BalanceRequest(commodity="cobalt", period="2024", epsilon=0.0029, totals="world")
    assert [total_area(q) for q in total_queries(world)] == [("world", "World")]


def total_results(request: BalanceRequest, values: list[dict[tuple[str, str], PooledCell]],
                  *, nodes: list[NodeOutcome] | None = None) -> list[PooledResult]:
    """Results of total_queries(request), the i-th with cells values[i] (else not covered)."""
    out = []
    for q, cells in zip(total_queries(request), values, strict=False):
        out.append(PooledResult(query=q, status="completed", nodes=nodes or [],
                                created_at=NOW, cells=[
            cells[key].model_copy(update={"key": list(key)}) if key in cells
            else PooledCell(key=list(key), status=CellStatus.NOT_COVERED)
            for key in q.public_keys()]))
    return out


def test_measured_totals_join_the_balance_when_the_same_nodes_answered() -> None:
    request = BalanceRequest(commodity="cobalt", period="2024", totals="world+regions")
    answered = [NodeOutcome(node_id=f"n{i}", status=NodeStatus.ANSWERED, epsilon=0.1)
                for i in range(3)]
    flows, stocks = results(request, {
        ("COD", "mining", "production"): published(1000.0, [10.0] * 3)}, {})
    flows = flows.model_copy(update={"nodes": answered})
    totals = total_results(request, [
        {("mining", "production"): published(1010.0, [20.0] * 3)},
        {("mining", "production"): published(990.0, [100.0] * 3)}], nodes=answered)
    balance = assemble_balance(request, flows, stocks, totals)
    got = {(t.level, t.area, t.stage, t.figure): t.value.value for t in balance.totals}
    assert got == {("world", "World", "mining", "production"): 1010.0,
                   ("region", "Africa", "mining", "production"): 990.0}
    assert len(balance.query_ids) == 4
    # a total answered by another set of nodes measures another sum: left out, but its
    # query (and epsilon) stays in the provenance
    other = [answered[0], answered[1].model_copy(update={"status": NodeStatus.EXPIRED,
                                                         "epsilon": None}), answered[2]]
    late = [totals[0].model_copy(update={"nodes": other}), totals[1]]
    balance = assemble_balance(request, flows, stocks, late)
    assert [t.area for t in balance.totals] == ["Africa"]
    assert len(balance.query_ids) == 4


def test_apparent_consumption_identity_and_its_error_bar() -> None:
    request = BalanceRequest(commodity="cobalt", period="2024")
    flows, stocks = results(request, {
        ("COD", "mining", "production"): published(1000.0, [10.0, 10.0, 10.0]),
        ("COD", "mining", "import"): published(50.0, [10.0, 10.0, 10.0]),
        ("COD", "mining", "export"): published(800.0, [10.0, 10.0, 10.0]),
    }, {
        ("COD", "mining", "2023"): published(100.0, [5.0, 5.0, 5.0]),
        ("COD", "mining", "2024"): published(130.0, [5.0, 5.0, 5.0]),
    })
    balance = assemble_balance(request, flows, stocks)
    assert [(r.country, r.stage) for r in balance.rows] == [("COD", "mining")]
    row = balance.rows[0]
    assert row.stock_change.value == 30.0
    assert row.apparent_consumption.value == 1000.0 + 50.0 - 800.0 - 30.0
    assert row.consumption.status is CellStatus.NOT_COVERED
    # five terms of three noise draws each
    expected_std = math.sqrt(9 * 2 * 10.0**2 + 6 * 2 * 5.0**2)
    assert row.apparent_consumption.std is not None
    assert math.isclose(row.apparent_consumption.std, expected_std)


def test_a_suppressed_term_suppresses_the_apparent_consumption() -> None:
    request = BalanceRequest(commodity="cobalt", period="2024")
    flows, stocks = results(request, {
        ("COD", "mining", "production"): published(1000.0, [10.0] * 3),
        ("COD", "mining", "export"): PooledCell(key=[], status=CellStatus.SUPPRESSED),
    }, {})
    row = assemble_balance(request, flows, stocks).rows[0]
    assert row.exports.status is CellStatus.SUPPRESSED and row.exports.value is None
    assert row.apparent_consumption.status is CellStatus.SUPPRESSED
    assert row.apparent_consumption.value is None
    assert row.stock_change.status is CellStatus.NOT_COVERED


@pytest.mark.parametrize(("fields", "message"), [
    ({"period": "2024-06"}, "a balance covers a calendar year"),
    ({"period": "2024", "min_contributors": 3054}, "less than or equal to 1000"),
    ({"period": "2024", "unit_sum_bound": 4e16}, "less than or equal to 1000000000"),
    ({"period": "2024", "unit_sum_bound": 0.0004}, "greater than or equal to 0.001"),
    ({"period": "2024", "epsilon": 5e-324}, "greater than or equal to 0.001"),
])
def test_balance_requests_outside_the_protocol_limits_are_refused_up_front(
    fields: dict[str, object], message: str
) -> None:
    """Found by fuzzing: these used to pass the request model and fail later (HTTP 500)."""
    with pytest.raises(ValueError, match=message):
        BalanceRequest.model_validate({"commodity": "lithium", **fields})
