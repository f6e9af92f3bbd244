"""The DP computation behind every aggregate release of a node.

:func:`compute_release` turns the node's records and an :class:`~protocols.AggregateQuery`
into noisy cells. It is a plain function of a Polars frame, so it can be tested and
benchmarked without a database or a server.

Sensitivity argument (why the stated epsilon holds)
----------------------------------------------------
The privacy unit is a *contribution unit-year*: all records of one site (else one contract,
else the record alone) whose period falls in one calendar year. Neighbouring datasets differ
by all records of one unit-year ``u``.

1. Every record falls in at most one cell: its cell key is a function of the record alone
   (commodity, stage, flow, country, partner, and the one query period containing it; query
   periods never overlap). Records outside the node's declared coverage are dropped by a rule
   that depends only on the public policy.
2. Sums: each record's value is clipped to ``[0, record_clip]`` and fixed-point encoded to an
   integer. For stock levels only ``u``'s latest reported level in a cell is kept (a choice
   that depends on ``u``'s records only). ``u``'s per-cell sums are non-negative integers; if
   their total exceeds ``B = unit_sum_bound`` they are scaled down together (rounded down, and
   any rounding excess taken off ``u``'s largest cell) so that they total at most ``B``.
   Removing ``u`` therefore changes the vector of cell sums by at most ``B`` in L1 norm.
   The *value* measure (``value_usd``, price flow only) is the record's
   ``price_usd_t x quantity_t`` in USD, defined only when the record has both; it is then
   treated exactly like any other measure: clipped to ``[0, record_clip]`` USD per record and
   bounded to ``unit_sum_bound`` USD per unit-year in L1 over the cells, so step 2 holds with
   ``B`` in USD (the product is computed before clipping, so a unit's value never exceeds the
   bound whatever its price or quantity). Grouping by ``contract_type`` keys a record by its
   own contract type, so step 1 holds too. (Fixed point is 1/1000 USD: the largest bound,
   1e9 USD, is 1e12 units, far inside 64-bit integers.)
3. Counts: ``u`` contributes at most ``k = unit_record_bound`` records (the first ``k`` by
   record id), so the vector of counts changes by at most ``k`` in L1 norm.
4. Noise: OpenDP's discrete Laplace with scale ``B / epsilon`` (sums) or ``k / epsilon``
   (counts) over the whole vector of public keys gives ``(epsilon, 0)``-DP for ``u``.
   A mean releases both, with ``epsilon / 2`` each (sequential composition).

Each unit-year lies in one calendar year, so a release is charged ``epsilon`` in every year
the query's periods touch. Clipping and scaling bias large units' figures downwards: the
bounds are public query parameters chosen with that trade-off in mind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from protocols import (
    FIXED_POINT_SCALE,
    AggregateQuery,
    CoverageEntry,
    Dimension,
    Flow,
    Measure,
    QueryKind,
    laplace_mechanism,
    parse_period,
)

__all__ = [
    "MECHANISM",
    "PRIVACY_UNIT",
    "RECORD_SCHEMA",
    "ComputedRelease",
    "compute_release",
    "exact_cell_values",
]

MECHANISM = (
    "OpenDP make_laplace over integers (discrete Laplace) on fixed-point values "
    f"(1/{FIXED_POINT_SCALE} of the unit); pure epsilon-DP"
)
PRIVACY_UNIT = (
    "one site (else contract, else record) in one calendar year; its L1 contribution is "
    "bounded by bounds.unit_sum_bound (sums) and bounds.unit_record_bound records (counts)"
)

#: Columns (and types) of the frame :func:`compute_release` reads.
RECORD_SCHEMA: dict[str, type[pl.DataType]] = {
    "record_id": pl.String,
    "year": pl.Int64,
    "first_month": pl.Int64,
    "last_month": pl.Int64,
    "commodity": pl.String,
    "stage": pl.String,
    "flow": pl.String,
    "country": pl.String,
    "partner_country": pl.String,
    "quantity_t": pl.Float64,
    "price_usd_t": pl.Float64,
    "contribution_unit": pl.String,
    "contract_type": pl.String,
}

_KEY_COLUMN = {
    Dimension.COMMODITY: "commodity",
    Dimension.STAGE: "stage",
    Dimension.FLOW: "flow",
    Dimension.COUNTRY: "country",
    Dimension.PARTNER_COUNTRY: "partner_country",
    Dimension.PERIOD: "query_period",
    Dimension.CONTRACT_TYPE: "contract_type",
}


@dataclass(frozen=True)
class ComputedRelease:
    """Noisy figures in public-key order, with the noise scales and the epsilon spent."""

    sums: list[float] | None
    counts: list[float] | None
    sum_scale: float | None
    count_scale: float | None
    epsilon: float


_UNIT = ["contribution_unit", "year"]  # a unit-year
_COVERAGE_COLUMNS = ["commodity", "stage", "flow", "country"]


def _in_scope(records: pl.DataFrame, query: AggregateQuery) -> pl.LazyFrame:
    """Records the query covers, each tagged with the one query period containing it."""
    conditions = [
        pl.col("commodity").is_in([str(c) for c in query.commodities]),
        pl.col("flow").is_in([str(f) for f in query.flows]),
    ]
    if query.stages is not None:
        conditions.append(pl.col("stage").is_in([str(s) for s in query.stages]))
    if query.countries is not None:
        conditions.append(pl.col("country").is_in(list(query.countries)))
    if query.partner_countries is not None:
        conditions.append(pl.col("partner_country").is_in(list(query.partner_countries)))
    period_expr: pl.Expr = pl.lit(None, dtype=pl.String)
    for text in reversed(query.periods):
        lo, hi = parse_period(text).month_index
        inside = (pl.col("first_month") >= lo) & (pl.col("last_month") <= hi)
        period_expr = pl.when(inside).then(pl.lit(text)).otherwise(period_expr)
    return (
        records.lazy()
        .filter(pl.all_horizontal(conditions))
        .with_columns(query_period=period_expr)
        .filter(pl.col("query_period").is_not_null())
    )


def _coverage_table(coverage: Sequence[CoverageEntry]) -> pl.LazyFrame:
    """Every declared (commodity, stage, flow, country) combination."""
    rows = [
        (str(e.commodity), str(stage), str(flow), country)
        for e in coverage
        for stage in e.stages
        for flow in e.flows
        for country in e.countries
    ]
    return pl.LazyFrame(
        rows, schema={name: pl.String for name in _COVERAGE_COLUMNS}, orient="row"
    ).unique()


def _in_coverage(frame: pl.LazyFrame, coverage: Sequence[CoverageEntry]) -> pl.LazyFrame:
    """Keep only rows inside the node's declared coverage (rows need its four columns)."""
    return frame.join(_coverage_table(coverage), on=_COVERAGE_COLUMNS, how="semi")


def _latest_stock_only(stock: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """Of stock-level records keep, per unit-year and cell, only the latest reported level."""
    latest = pl.col("last_month").max().over([*_UNIT, *keys])
    return stock.filter(pl.col("last_month") == latest)


def _measure_expr(measure: Measure) -> pl.Expr:
    """A record's value of ``measure`` (null when the record lacks it), before clipping."""
    if measure is Measure.PRICE:
        return pl.col("price_usd_t")
    if measure is Measure.VALUE:  # USD: null unless the record has a price and a quantity
        return pl.col("price_usd_t") * pl.col("quantity_t")
    return pl.col("quantity_t")


def _bounded_sums(scoped: pl.LazyFrame, query: AggregateQuery, keys: list[str],
                  coverage: Sequence[CoverageEntry]) -> pl.DataFrame:
    """Per-cell sums (fixed point) after per-record clipping and per-unit L1 scaling.

    Records are clipped and encoded one by one, then summed per unit-year and per the
    coverage columns and cell keys; coverage is applied to those (far fewer) partial sums,
    which is the same as applying it to every record since it depends only on grouped
    columns. Stock levels keep each unit-year's latest level per cell first.
    """
    bounds = query.bounds
    measure = _measure_expr(query.measure)
    clip_fp = round(bounds.record_clip * FIXED_POINT_SCALE)
    bound_fp = round(bounds.unit_sum_bound * FIXED_POINT_SCALE)
    valued = scoped.filter(measure.is_not_null()).with_columns(
        value=(measure.clip(0.0, bounds.record_clip) * FIXED_POINT_SCALE)
        .round()
        .cast(pl.Int64)
        .clip(0, clip_fp)
    )
    if Flow.STOCK_LEVEL in query.flows:
        is_stock = pl.col("flow") == str(Flow.STOCK_LEVEL)
        stock = _latest_stock_only(_in_coverage(valued.filter(is_stock), coverage), keys)
        valued = pl.concat([valued.filter(~is_stock), stock], how="diagonal_relaxed")
    partial_keys = list(dict.fromkeys([*_UNIT, *_COVERAGE_COLUMNS, *keys]))
    partial = _in_coverage(
        valued.group_by(partial_keys).agg(pl.col("value").sum()), coverage
    )
    per_unit = (
        partial.group_by([*_UNIT, *keys])
        .agg(pl.col("value").sum())
        .with_columns(total=pl.col("value").sum().over(_UNIT))
    )
    scaled = per_unit.with_columns(
        value=pl.when(pl.col("total") > bound_fp)
        .then((pl.col("value").cast(pl.Float64) * (bound_fp / pl.col("total"))).floor())
        .otherwise(pl.col("value"))
        .cast(pl.Int64)
    )
    # Floating-point rounding may leave a scaled unit a few units over the bound: take the
    # excess off its largest cell so the L1 bound holds exactly.
    bounded = scaled.with_columns(
        excess=(pl.col("value").sum().over(_UNIT) - bound_fp).clip(lower_bound=0),
        is_largest=pl.col("value").rank("ordinal", descending=True).over(_UNIT) == 1,
    ).with_columns(
        value=pl.when(pl.col("is_largest"))
        .then(pl.col("value") - pl.col("excess"))
        .otherwise(pl.col("value"))
    ).collect()
    worst = bounded.group_by(_UNIT).agg(pl.col("value").sum())["value"].max()
    if isinstance(worst, int) and worst > bound_fp:  # pragma: no cover - invariant
        raise AssertionError("contribution bound violated; refusing to release")
    if not keys:  # no grouping: one cell, the total
        return bounded.select(pl.col("value").sum().alias("sum"))
    return bounded.group_by(keys).agg(pl.col("value").sum().alias("sum"))


def _bounded_counts(scoped: pl.LazyFrame, query: AggregateQuery, keys: list[str],
                    coverage: Sequence[CoverageEntry]) -> pl.DataFrame:
    """Per-cell record counts, each unit-year counting at most ``unit_record_bound`` records."""
    limit = query.bounds.unit_record_bound
    records = _in_coverage(scoped, coverage)
    if Flow.STOCK_LEVEL in query.flows:
        is_stock = pl.col("flow") == str(Flow.STOCK_LEVEL)
        records = pl.concat([records.filter(~is_stock),
                             _latest_stock_only(records.filter(is_stock), keys)])
    kept = records.filter(pl.col("record_id").rank("ordinal").over(_UNIT) <= limit)
    if not keys:  # no grouping: one cell, the total
        return kept.select(pl.len().cast(pl.Int64).alias("count")).collect()
    return kept.group_by(keys).agg(pl.len().cast(pl.Int64).alias("count")).collect()


def _vector(table: pl.DataFrame, keys: list[str], column: str,
            public_keys: list[tuple[str, ...]]) -> list[int]:
    """Values of ``column`` in public-key order, zero where a cell has no records."""
    if not keys:
        total = table[column].sum() if table.height else 0
        return [int(total or 0)]
    lookup = {
        tuple(row[:-1]): int(row[-1])
        for row in table.select([*keys, column]).iter_rows()
    }
    return [lookup.get(key, 0) for key in public_keys]


def exact_cell_values(
    records: pl.DataFrame, query: AggregateQuery, coverage: Sequence[CoverageEntry]
) -> tuple[list[int] | None, list[int] | None]:
    """The bounded, *noise-free* per-cell sums and counts (fixed point), in public-key order.

    Never released: used by :func:`compute_release` and by tests of the bounding.
    """
    keys = [_KEY_COLUMN[d] for d in query.group_by]
    public_keys = query.public_keys()
    needed = [*RECORD_SCHEMA]
    scoped = _in_scope(records.select(needed), query)
    sums = counts = None
    if query.kind in (QueryKind.SUM, QueryKind.MEAN):
        sums = _vector(_bounded_sums(scoped, query, keys, coverage), keys, "sum", public_keys)
    if query.kind in (QueryKind.COUNT, QueryKind.MEAN):
        counts = _vector(_bounded_counts(scoped, query, keys, coverage), keys, "count",
                         public_keys)
    return sums, counts


def compute_release(
    records: pl.DataFrame, query: AggregateQuery, coverage: Sequence[CoverageEntry]
) -> ComputedRelease:
    """Noisy per-cell statistics for ``query``; ``(query.epsilon, 0)``-DP (module docstring).

    ``records`` has the columns of :data:`RECORD_SCHEMA`.
    """
    sums, counts = exact_cell_values(records, query, coverage)
    epsilon = query.epsilon / 2 if query.kind is QueryKind.MEAN else query.epsilon
    spent = 0.0
    noisy_sums = noisy_counts = None
    sum_scale = count_scale = None
    if sums is not None:
        bound_fp = round(query.bounds.unit_sum_bound * FIXED_POINT_SCALE)
        mechanism = laplace_mechanism(sensitivity=bound_fp, epsilon=epsilon)
        noisy_sums = [v / FIXED_POINT_SCALE for v in mechanism.release(sums)]
        sum_scale = mechanism.scale / FIXED_POINT_SCALE
        spent += mechanism.epsilon
    if counts is not None:
        mechanism = laplace_mechanism(
            sensitivity=query.bounds.unit_record_bound, epsilon=epsilon
        )
        noisy_counts = [float(v) for v in mechanism.release(counts)]
        count_scale = mechanism.scale
        spent += mechanism.epsilon
    return ComputedRelease(noisy_sums, noisy_counts, sum_scale, count_scale, spent)
