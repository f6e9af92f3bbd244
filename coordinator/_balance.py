"""The pooled commodity balance: supply and use per country and stage for one year.

Two pooled queries, both sums of tonnes of contained element grouped by public keys:

1. flows of the year: production, imports, exports, consumption, recycling input and waste,
   grouped by country x stage x flow, at two thirds of the balance's epsilon;
2. closing stocks at the end of the previous year and of the year, grouped by
   country x stage x period, at one third.

A node is therefore charged ``epsilon`` in the balance year and ``epsilon / 3`` in the year
before. For each country and stage::

    stock change         = closing stock - opening stock
    apparent consumption = production + imports - exports - stock change

Figures no company reports on count as zero in the identity; a suppressed figure makes the
apparent consumption suppressed too. Error bars add the independent noise of every term.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import Engine

from coordinator._models import (
    Balance,
    BalanceFigure,
    BalanceRequest,
    BalanceRow,
    CellStatus,
    NodeOutcome,
    PooledCell,
    PooledResult,
)
from coordinator._pooling import sum_error_bar
from coordinator._queries import run_pooled_query
from protocols import AggregateQuery, Bounds, Commodity, Flow, parse_period

__all__ = [
    "BALANCE_FLOWS",
    "DEFAULT_STOCK_BOUNDS",
    "DEFAULT_UNIT_BOUNDS",
    "assemble_balance",
    "balance_queries",
    "pooled_balance",
]

#: Flows of the balance, in the order of its columns.
BALANCE_FLOWS = [Flow.PRODUCTION, Flow.IMPORT, Flow.EXPORT, Flow.CONSUMPTION,
                 Flow.RECYCLING_INPUT, Flow.WASTE]

#: Default bound on one site-year's total contribution, tonnes of contained element: about
#: twice the output of a large site, from public order-of-magnitude figures. Larger sites'
#: figures are scaled down to it (bias); smaller bounds mean less noise.
DEFAULT_UNIT_BOUNDS: dict[Commodity, float] = {
    Commodity.COBALT: 12_000.0,
    Commodity.LITHIUM: 20_000.0,
    Commodity.NATURAL_GRAPHITE: 60_000.0,
    Commodity.NICKEL: 60_000.0,
    Commodity.RARE_EARTHS: 20_000.0,
    Commodity.TELLURIUM: 60.0,
    Commodity.COPPER: 400_000.0,
    Commodity.MANGANESE: 400_000.0,
}


#: Default bound on one site's closing stock, tonnes of contained element: stocks are a few
#: months of output, so their bound (and noise) is much smaller than that of the flows.
DEFAULT_STOCK_BOUNDS: dict[Commodity, float] = {
    commodity: bound / 8 for commodity, bound in DEFAULT_UNIT_BOUNDS.items()
}


def _bounds(request: BalanceRequest) -> tuple[float, float]:
    """(flow bound, stock bound) of a balance request, defaults filled in."""
    return (request.unit_sum_bound or DEFAULT_UNIT_BOUNDS[request.commodity],
            request.stock_unit_bound or DEFAULT_STOCK_BOUNDS[request.commodity])


def balance_queries(request: BalanceRequest) -> tuple[AggregateQuery, AggregateQuery]:
    """The flows query and the stocks query of a balance."""
    period = parse_period(request.period)
    if period.granularity != "year":
        raise ValueError(f"a balance covers a calendar year, not {period}")
    flow_bound, stock_bound = _bounds(request)
    common = {
        "kind": "sum",
        "commodities": [request.commodity],
        "min_contributors": request.min_contributors,
        "purpose": request.purpose,
    }
    flows = AggregateQuery.model_validate({
        **common, "query_id": uuid.uuid4().hex, "flows": BALANCE_FLOWS,
        "periods": [str(period)], "group_by": ["country", "stage", "flow"],
        "epsilon": request.epsilon * 2 / 3,
        "bounds": Bounds(record_clip=flow_bound, unit_sum_bound=flow_bound),
    })
    stocks = AggregateQuery.model_validate({
        **common, "query_id": uuid.uuid4().hex, "flows": [Flow.STOCK_LEVEL],
        "periods": [str(period.previous_year()), str(period)],
        "group_by": ["country", "stage", "period"], "epsilon": request.epsilon / 3,
        "bounds": Bounds(record_clip=stock_bound, unit_sum_bound=stock_bound),
    })
    return flows, stocks


def _figure(cell: PooledCell | None) -> BalanceFigure:
    if cell is None:
        return BalanceFigure(status=CellStatus.NOT_COVERED)
    return BalanceFigure(status=cell.status, value=cell.value, std=cell.std, ci95=cell.ci95,
                         noise_scales=list(cell.noise_scales))


def _combine(terms: list[tuple[float, PooledCell | None]]) -> BalanceFigure:
    """sum(sign * cell): suppressed if any term is; not covered if every term is."""
    present = [(s, c) for s, c in terms if c is not None and c.status is not CellStatus.NOT_COVERED]
    if not present:
        return BalanceFigure(status=CellStatus.NOT_COVERED)
    if any(c.status is CellStatus.SUPPRESSED for _, c in present):
        return BalanceFigure(status=CellStatus.SUPPRESSED)
    value = sum(s * (c.value or 0.0) for s, c in present)
    scales = [b for _, c in present for b in c.noise_scales]
    std, ci95 = sum_error_bar(scales)
    return BalanceFigure(status=CellStatus.PUBLISHED, value=value, std=std, ci95=ci95,
                         noise_scales=scales)


def _epsilon_by_node(results: list[PooledResult]) -> dict[str, dict[str, float]]:
    spent: dict[str, dict[str, float]] = {}
    for result in results:
        for outcome in result.nodes:
            if outcome.epsilon is None:
                continue
            per_year = spent.setdefault(outcome.node_id, {})
            for year in result.query.accounting_periods():
                per_year[str(year)] = per_year.get(str(year), 0.0) + outcome.epsilon
    return spent


def _merge_outcomes(results: list[PooledResult]) -> list[NodeOutcome]:
    merged: dict[str, NodeOutcome] = {}
    for result in results:
        for outcome in result.nodes:
            if outcome.node_id not in merged or outcome.status != "answered":
                merged[outcome.node_id] = outcome
    return [merged[k] for k in sorted(merged)]


def assemble_balance(request: BalanceRequest, flows: PooledResult,
                     stocks: PooledResult) -> Balance:
    """Build the balance rows from the two pooled results."""
    year = parse_period(request.period)
    flow_cells = {tuple(c.key): c for c in flows.cells}
    stock_cells = {tuple(c.key): c for c in stocks.cells}
    places = sorted({(k[0], k[1]) for k, c in flow_cells.items()
                     if c.status is not CellStatus.NOT_COVERED}
                    | {(k[0], k[1]) for k, c in stock_cells.items()
                       if c.status is not CellStatus.NOT_COVERED})
    rows = []
    for country, stage in places:
        cell = {f: flow_cells.get((country, stage, str(f))) for f in BALANCE_FLOWS}
        opening = stock_cells.get((country, stage, str(year.previous_year())))
        closing = stock_cells.get((country, stage, str(year)))
        rows.append(BalanceRow(
            country=country, stage=stage,
            production=_figure(cell[Flow.PRODUCTION]),
            imports=_figure(cell[Flow.IMPORT]),
            exports=_figure(cell[Flow.EXPORT]),
            consumption=_figure(cell[Flow.CONSUMPTION]),
            recycling_input=_figure(cell[Flow.RECYCLING_INPUT]),
            waste=_figure(cell[Flow.WASTE]),
            opening_stock=_figure(opening),
            closing_stock=_figure(closing),
            stock_change=_combine([(1.0, closing), (-1.0, opening)]),
            apparent_consumption=_combine([
                (1.0, cell[Flow.PRODUCTION]), (1.0, cell[Flow.IMPORT]),
                (-1.0, cell[Flow.EXPORT]), (-1.0, closing), (1.0, opening),
            ]),
        ))
    flow_bound, stock_bound = _bounds(request)
    return Balance(
        commodity=request.commodity, period=str(year), rows=rows,
        query_ids=[flows.query.query_id, stocks.query.query_id],
        nodes=_merge_outcomes([flows, stocks]),
        epsilon_by_node=_epsilon_by_node([flows, stocks]),
        unit_sum_bound=flow_bound,
        stock_unit_bound=stock_bound,
    )


async def pooled_balance(*, engine: Engine, request: BalanceRequest, timeout: float) -> Balance:
    """Run the balance's two pooled queries concurrently and assemble the balance."""
    flows_query, stocks_query = balance_queries(request)
    flows, stocks = await asyncio.gather(
        run_pooled_query(engine=engine, query=flows_query, timeout=timeout),
        run_pooled_query(engine=engine, query=stocks_query, timeout=timeout),
    )
    return assemble_balance(request, flows, stocks)
