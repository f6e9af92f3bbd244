"""The pooled commodity balance: supply and use per country and stage for one year.

Pooled queries, all sums of tonnes of contained element grouped by public keys, with the
balance's ``epsilon`` split by :data:`EPSILON_SPLITS` according to ``BalanceRequest.totals``
(docs/balances.md, "Epsilon split"):

* default, ``totals="none"``: flows of the year (production, imports, exports,
  consumption, recycling input, waste) grouped by country x stage x flow at
  ``2 epsilon / 3``; closing stocks at the end of the previous year and of the year,
  grouped by country x stage x period, at ``epsilon / 3``;
* ``totals="world"``: the flows by country at ``epsilon / 3`` and the same flows' **world
  totals** (grouped by stage x flow, no country grouping) at ``epsilon / 3``; stocks as above;
* ``totals="world+regions"``: flows by country ``epsilon / 3``, world ``epsilon / 6``, one
  query per UN M49 region (that region's countries as filter, grouped by stage x flow) at
  ``epsilon / 30`` each (every node is charged every region query: sequential
  composition, since a contract or record unit may span regions), stocks ``epsilon / 3``.
  Below ``epsilon = 0.003`` a region query's share would fall under the protocol's minimum
  (1e-4), so such a balance measures countries only (the default split).

A node is charged ``epsilon`` in the balance year and ``epsilon / 3`` in the year before in
every case. Measured totals are independent noisy measurements of sums of country cells:
:func:`coordinator.reconcile_balance` combines all levels by weighted least squares. The
default measures none: on the benchmark's synthetic markets (BENCHMARKS.md, ``consistency``)
the countries-only split gives the smallest post-processed error at every level, except the
world level of a trader-heavy market, where ``"world"`` wins there only. Optionally
(``price_epsilon``) the year's volume-weighted prices by contract type are pooled too
(:func:`coordinator.vwap_queries`), at that extra epsilon.

For each country and stage::

    stock change         = closing stock - opening stock
    apparent consumption = production + imports - exports - stock change

Figures no company reports on count as zero in the identity; a suppressed figure makes the
apparent consumption suppressed too. Error bars add the independent noise of every term.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from sqlalchemy import Engine

from coordinator._hierarchy import WORLD, region_table
from coordinator._models import (
    Balance,
    BalanceFigure,
    BalanceRequest,
    BalanceRow,
    CellStatus,
    MeasuredTotal,
    NodeOutcome,
    PooledCell,
    PooledResult,
    PriceFigure,
)
from coordinator._pooling import sum_error_bar
from coordinator._prices import DEFAULT_PRICE_BOUNDS, vwap_figures, vwap_queries
from coordinator._queries import run_pooled_query
from protocols import AggregateQuery, Bounds, Commodity, Flow, parse_period

__all__ = [
    "BALANCE_FLOWS",
    "DEFAULT_STOCK_BOUNDS",
    "DEFAULT_UNIT_BOUNDS",
    "EPSILON_SHARES",
    "EPSILON_SPLITS",
    "FIGURE_OF_FLOW",
    "MEASURED_REGIONS",
    "assemble_balance",
    "balance_epsilon",
    "balance_queries",
    "pooled_balance",
    "total_area",
    "total_queries",
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


#: Shares of a balance's epsilon by measured totals (``BalanceRequest.totals``); each sums
#: to 1, and the stocks' share (also charged in the previous year) is 1/3 in every split.
#: ``flows_regions`` is divided equally among :data:`MEASURED_REGIONS`.
EPSILON_SPLITS: dict[str, dict[str, float]] = {
    "none": {"flows_country": 2 / 3, "stocks": 1 / 3},
    "world": {"flows_country": 1 / 3, "flows_world": 1 / 3, "stocks": 1 / 3},
    "world+regions": {"flows_country": 1 / 3, "flows_world": 1 / 6, "flows_regions": 1 / 6,
                      "stocks": 1 / 3},
}
#: The default split (``totals="none"``: countries only).
EPSILON_SHARES: dict[str, float] = EPSILON_SPLITS["none"]
#: Smallest epsilon of one query (protocols.AggregateQuery).
_MIN_QUERY_EPSILON = 1e-4

#: The UN M49 regions measured by their own query (``Unassigned``, i.e. Antarctica alone, is
#: not: it is a single country).
MEASURED_REGIONS: tuple[str, ...] = tuple(
    r for r in region_table().regions() if len(region_table().members(r)) > 1)

#: Balance figure of each flow of the flows query.
FIGURE_OF_FLOW: dict[Flow, str] = {
    Flow.PRODUCTION: "production", Flow.IMPORT: "imports", Flow.EXPORT: "exports",
    Flow.CONSUMPTION: "consumption", Flow.RECYCLING_INPUT: "recycling_input",
    Flow.WASTE: "waste",
}


def _split(request: BalanceRequest) -> dict[str, float]:
    """The epsilon split a request runs with (see the module doc for the small-epsilon case)."""
    split = EPSILON_SPLITS[request.totals]
    region_share = split.get("flows_regions", 0.0) / len(MEASURED_REGIONS)
    if 0 < request.epsilon * region_share < _MIN_QUERY_EPSILON:
        return EPSILON_SPLITS["none"]
    return split


def balance_epsilon(flows: AggregateQuery, stocks: AggregateQuery) -> float | None:
    """The balance epsilon a stored flows/stocks query pair was run at, or ``None`` if the
    two epsilons do not fit any of :data:`EPSILON_SPLITS`."""
    total = stocks.epsilon / EPSILON_SHARES["stocks"]
    for split in EPSILON_SPLITS.values():
        expected = total * split["flows_country"]
        if abs(flows.epsilon - expected) <= 1e-9 * max(1.0, expected):
            return total
    return None


def _bounds(request: BalanceRequest) -> tuple[float, float]:
    """(flow bound, stock bound) of a balance request, defaults filled in."""
    return (request.unit_sum_bound or DEFAULT_UNIT_BOUNDS[request.commodity],
            request.stock_unit_bound or DEFAULT_STOCK_BOUNDS[request.commodity])


def balance_queries(request: BalanceRequest) -> tuple[AggregateQuery, AggregateQuery]:
    """The country flows query and the stocks query of a balance (see :func:`total_queries`
    for its world and region queries)."""
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
        "epsilon": request.epsilon * _split(request)["flows_country"],
        "bounds": Bounds(record_clip=flow_bound, unit_sum_bound=flow_bound),
    })
    stocks = AggregateQuery.model_validate({
        **common, "query_id": uuid.uuid4().hex, "flows": [Flow.STOCK_LEVEL],
        "periods": [str(period.previous_year()), str(period)],
        "group_by": ["country", "stage", "period"],
        "epsilon": request.epsilon * _split(request)["stocks"],
        "bounds": Bounds(record_clip=stock_bound, unit_sum_bound=stock_bound),
    })
    return flows, stocks


def total_queries(request: BalanceRequest) -> list[AggregateQuery]:
    """The world flows query, then one flows query per :data:`MEASURED_REGIONS` region, as
    far as ``request.totals`` asks for them (none by default).

    Each has the country flows query's flows, period and bounds and is grouped by
    stage x flow; the world query has no country filter, a region query filters the
    region's countries. Regions are left out when the balance's epsilon is too small
    (module doc).
    """
    split = _split(request)
    if "flows_world" not in split:
        return []
    period = parse_period(request.period)
    flow_bound, _ = _bounds(request)
    common = {
        "kind": "sum", "commodities": [request.commodity], "flows": BALANCE_FLOWS,
        "periods": [str(period)], "group_by": ["stage", "flow"],
        "min_contributors": request.min_contributors, "purpose": request.purpose,
        "bounds": Bounds(record_clip=flow_bound, unit_sum_bound=flow_bound),
    }
    table = region_table()
    queries = [AggregateQuery.model_validate({
        **common, "query_id": uuid.uuid4().hex,
        "epsilon": request.epsilon * split["flows_world"]})]
    if "flows_regions" in split:
        region_epsilon = request.epsilon * split["flows_regions"] / len(MEASURED_REGIONS)
        for region in MEASURED_REGIONS:
            queries.append(AggregateQuery.model_validate({
                **common, "query_id": uuid.uuid4().hex, "countries": table.members(region),
                "epsilon": region_epsilon}))
    return queries


def total_area(query: AggregateQuery) -> tuple[str, str] | None:
    """``(level, area)`` a total query measures: ``("world", "World")`` without a country
    filter, ``("region", name)`` when it filters exactly a measured region's countries."""
    if Flow.STOCK_LEVEL in query.flows or "country" in query.group_by:
        return None
    if query.countries is None:
        return ("world", WORLD)
    wanted = set(query.countries)
    table = region_table()
    for region in MEASURED_REGIONS:
        if set(table.members(region)) == wanted:
            return ("region", region)
    return None


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


def _totals(flows: PooledResult, totals: Sequence[PooledResult]) -> list[MeasuredTotal]:
    """Measured totals of the results answered by exactly the flows query's nodes.

    A total pooled over other nodes than the country cells (a node answered one query but
    not the other) is not a measurement of their sum, so it is left out.
    """
    answered = set(flows.answered)
    out: list[MeasuredTotal] = []
    for result in totals:
        where = total_area(result.query)
        if (where is None or result.status != "completed" or set(result.answered) != answered
                or result.query.periods != flows.query.periods
                or result.query.commodities != flows.query.commodities
                or result.query.bounds != flows.query.bounds):
            continue
        level, area = where
        for cell in result.cells:
            if cell.status is CellStatus.NOT_COVERED:
                continue
            stage, flow = cell.key
            out.append(MeasuredTotal(level=level, area=area, stage=stage,
                                     figure=FIGURE_OF_FLOW[Flow(flow)], value=_figure(cell),
                                     query_id=result.query.query_id))
    return out


def assemble_balance(request: BalanceRequest, flows: PooledResult, stocks: PooledResult,
                     totals: Sequence[PooledResult] = (),
                     prices: tuple[PooledResult, PooledResult] | None = None) -> Balance:
    """Build the balance rows from the pooled results.

    ``totals``: results of :func:`total_queries` (world and region flows); ``prices``: the
    (value, quantity) results of :func:`coordinator.vwap_queries` for the year.
    """
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
    measured = _totals(flows, totals)
    used = [flows, stocks, *totals]  # every query run, used or not: all were charged
    price_figures: list[PriceFigure] = []
    if prices is not None:
        used += list(prices)
        price_figures = vwap_figures(*prices)
    return Balance(
        commodity=request.commodity, period=str(year), rows=rows,
        query_ids=[r.query.query_id for r in used],
        nodes=_merge_outcomes(used),
        epsilon_by_node=_epsilon_by_node(used),
        unit_sum_bound=flow_bound,
        stock_unit_bound=stock_bound,
        totals=measured,
        prices=price_figures,
    )


async def pooled_balance(*, engine: Engine, request: BalanceRequest, timeout: float) -> Balance:
    """Run the balance's pooled queries concurrently and assemble the balance."""
    flows_query, stocks_query = balance_queries(request)
    totals = total_queries(request)
    price_pair: list[AggregateQuery] = []
    if request.price_epsilon is not None:
        year = parse_period(request.period).year
        price_pair = list(vwap_queries(
            commodity=request.commodity, periods=[str(year)], epsilon=request.price_epsilon,
            price_bound=request.price_bound or DEFAULT_PRICE_BOUNDS[request.commodity],
            quantity_bound=_bounds(request)[0], min_contributors=request.min_contributors))
    results = await asyncio.gather(*(
        run_pooled_query(engine=engine, query=q, timeout=timeout)
        for q in (flows_query, stocks_query, *totals, *price_pair)))
    flows, stocks = results[0], results[1]
    pair = results[2 + len(totals):]
    return assemble_balance(request, flows, stocks, results[2:2 + len(totals)],
                            (pair[0], pair[1]) if len(pair) == 2 else None)
