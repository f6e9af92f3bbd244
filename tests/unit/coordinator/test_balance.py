"""The balance: the identity holds for every published row; suppression propagates."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from coordinator import (
    BalanceRequest,
    CellStatus,
    PooledCell,
    PooledResult,
    assemble_balance,
    balance_queries,
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


def test_balance_queries_split_the_epsilon_and_cover_the_previous_year() -> None:
    flows, stocks = balance_queries(BalanceRequest(commodity="cobalt", period="2024",
                                                   epsilon=3.0))
    assert flows.epsilon == 2.0 and stocks.epsilon == 1.0
    assert flows.periods == ["2024"] and stocks.periods == ["2023", "2024"]
    assert flows.bounds.unit_sum_bound == 12_000.0
    assert stocks.bounds.unit_sum_bound == 1_500.0  # stocks: a few months of output
    with pytest.raises(ValueError, match="calendar year"):
        balance_queries(BalanceRequest(commodity="cobalt", period="2024-Q1"))


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
