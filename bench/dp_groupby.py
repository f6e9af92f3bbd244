"""Entry ``dp_groupby``: the node-side DP grouped sum against a plain Polars group-by.

Both paths run on the same synthetic records in the same process, interleaved, so the ratio
DP / baseline is what the privacy machinery costs on this data, whatever the machine's load.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from bench._harness import Benchmark, Column, EntryResult, RunConfig, Table, measure_interleaved
from node._aggregate import RECORD_SCHEMA, compute_release, exact_cell_values
from protocols import (
    FIXED_POINT_SCALE,
    AggregateQuery,
    Bounds,
    Commodity,
    CoverageEntry,
    Dimension,
    Flow,
    QueryKind,
    Stage,
    parse_period,
)

__all__ = [
    "BENCHMARK",
    "COMMODITIES",
    "COUNTRIES",
    "FLOWS",
    "ProfileRow",
    "Size",
    "SizeResult",
    "findings",
    "make_coverage",
    "make_query",
    "make_records",
    "plain_clipped_sums",
    "profile_release",
    "release_sums",
]

#: 40 producer / trader / consumer countries (ISO 3166-1 alpha-3), largest first.
COUNTRIES: tuple[str, ...] = (
    "CHN", "AUS", "COD", "CHL", "IDN", "USA", "RUS", "ZAF", "PER", "BRA",
    "CAN", "PHL", "ARG", "ZMB", "IND", "JPN", "KOR", "DEU", "MEX", "BOL",
    "ZWE", "MOZ", "MDG", "GAB", "NCL", "KAZ", "FIN", "NOR", "SWE", "POL",
    "BEL", "FRA", "GBR", "TZA", "GHA", "CUB", "MMR", "VNM", "MYS", "TUR",
)
COMMODITIES: tuple[Commodity, ...] = (
    Commodity.COBALT, Commodity.COPPER, Commodity.LITHIUM, Commodity.MANGANESE,
    Commodity.NATURAL_GRAPHITE, Commodity.NICKEL, Commodity.RARE_EARTHS,
)
FLOWS: tuple[Flow, ...] = (Flow.PRODUCTION, Flow.IMPORT, Flow.EXPORT, Flow.CONSUMPTION)
#: Share of records per flow (same order as FLOWS).
FLOW_SHARES = (0.35, 0.2, 0.2, 0.25)
#: Stages of the sites (a site works at one stage) and their shares.
STAGES: tuple[Stage, ...] = (Stage.MINING, Stage.REFINING, Stage.MANUFACTURING)
STAGE_SHARES = (0.6, 0.3, 0.1)
YEAR = 2024
RECORD_CLIP = 500.0
UNIT_SUM_BOUND = 5000.0
EPSILON = 1.0
N_SITES = 20_000


@dataclass(frozen=True)
class Size:
    """One measured row: how many records, and how many timed repeats."""

    rows: int
    repeats: int


FULL_SIZES = (Size(1_000_000, 5), Size(10_000_000, 3))
QUICK_SIZES = (Size(20_000, 3), Size(100_000, 3))


# --- data, query, coverage ----------------------------------------------------------------


def make_records(rows: int, *, seed: int, sites: int = N_SITES) -> pl.DataFrame:
    """``rows`` synthetic monthly records of year 2024 with the columns of RECORD_SCHEMA.

    Each of ``sites`` sites (the contribution unit, ``site:<n>``) has one commodity, one
    country (skewed towards large producers) and one stage; site activity is lognormal, so a
    few large sites report most records, as in real data. Flows are drawn per record; imports
    and exports get a partner country other than the site's. Quantities are lognormal around a
    per-site level (median about 12 t; a few percent exceed the 500 t clip).
    """
    rng = np.random.default_rng(seed)
    n_countries = len(COUNTRIES)
    country_weights = 1.0 / np.arange(1, n_countries + 1) ** 0.8
    site_country = rng.choice(n_countries, size=sites, p=country_weights / country_weights.sum())
    site_commodity = rng.integers(0, len(COMMODITIES), size=sites)
    site_stage = rng.choice(len(STAGES), size=sites, p=STAGE_SHARES)
    site_level = rng.normal(2.5, 1.0, size=sites)
    activity = rng.lognormal(0.0, 1.0, size=sites)

    site = rng.choice(sites, size=rows, p=activity / activity.sum())
    flow = rng.choice(len(FLOWS), size=rows, p=FLOW_SHARES)
    month_index = YEAR * 12 + rng.integers(0, 12, size=rows)  # year * 12 + month - 1
    country = site_country[site]
    partner = (country + rng.integers(1, n_countries, size=rows)) % n_countries
    is_trade = (flow == FLOWS.index(Flow.IMPORT)) | (flow == FLOWS.index(Flow.EXPORT))
    quantity = np.exp(site_level[site] + rng.normal(0.0, 1.0, size=rows))
    price = rng.lognormal(np.log(20_000.0), 0.3, size=rows)

    def labels(values: Sequence[str], codes: np.ndarray) -> pl.Series:
        # A categorical lookup, then a plain string column as RECORD_SCHEMA asks.
        return pl.Series(codes.astype(np.uint32)).replace_strict(
            dict(enumerate(values)), return_dtype=pl.String
        )

    frame = pl.DataFrame(
        {
            "row": np.arange(rows, dtype=np.int64),
            "year": np.full(rows, YEAR, dtype=np.int64),
            "first_month": month_index,
            "last_month": month_index,
            "commodity": labels([str(c) for c in COMMODITIES], site_commodity[site]),
            "stage": labels([str(s) for s in STAGES], site_stage[site]),
            "flow": labels([str(f) for f in FLOWS], flow),
            "country": labels(COUNTRIES, country),
            "partner_country": labels(COUNTRIES, partner),
            "is_trade": is_trade,
            "quantity_t": quantity,
            "price_usd_t": price,
            "site": site.astype(np.int64),
        }
    )
    return frame.select(
        record_id=pl.format("r{}", pl.col("row")),
        year=pl.col("year"),
        first_month=pl.col("first_month"),
        last_month=pl.col("last_month"),
        commodity=pl.col("commodity"),
        stage=pl.col("stage"),
        flow=pl.col("flow"),
        country=pl.col("country"),
        partner_country=pl.when(pl.col("is_trade")).then(pl.col("partner_country")),
        quantity_t=pl.col("quantity_t"),
        price_usd_t=pl.col("price_usd_t"),
        contribution_unit=pl.format("site:{}", pl.col("site")),
        # the standard allows a contract type on any flow; the benchmarked query ignores it
        contract_type=pl.when(pl.col("row") % 2 == 0).then(pl.lit("spot"))
        .otherwise(pl.lit("long_term")),
    ).cast(RECORD_SCHEMA)  # type: ignore[arg-type]


def make_query(*, epsilon: float = EPSILON) -> AggregateQuery:
    """The benchmarked query: sum of quantity by commodity x country x flow over 2024."""
    return AggregateQuery(
        query_id="0" * 31 + "1",
        kind=QueryKind.SUM,
        commodities=list(COMMODITIES),
        flows=list(FLOWS),
        periods=[str(YEAR)],
        countries=list(COUNTRIES),
        group_by=[Dimension.COMMODITY, Dimension.COUNTRY, Dimension.FLOW],
        epsilon=epsilon,
        bounds=Bounds(record_clip=RECORD_CLIP, unit_sum_bound=UNIT_SUM_BOUND),
        purpose="benchmark of the node-side DP grouped sum",
    )


def make_coverage() -> list[CoverageEntry]:
    """One declaration per commodity covering every stage, flow and country generated."""
    return [
        CoverageEntry(
            commodity=commodity,
            stages=list(STAGES),
            flows=list(FLOWS),
            countries=list(COUNTRIES),
        )
        for commodity in COMMODITIES
    ]


# --- the two paths ------------------------------------------------------------------------


def plain_clipped_sums(records: pl.DataFrame, query: AggregateQuery) -> pl.DataFrame:
    """The baseline: filter to the query, clip each record to [0, record_clip], group, sum.

    Only single-period queries grouped by columns of the frame (no period, no partner
    country filter): enough for this benchmark's query.
    """
    lo, hi = parse_period(query.periods[0]).month_index
    keys = [str(d) for d in query.group_by]
    return (
        records.filter(
            pl.col("commodity").is_in([str(c) for c in query.commodities])
            & pl.col("flow").is_in([str(f) for f in query.flows])
            & pl.col("country").is_in(list(query.countries or []))
            & (pl.col("first_month") >= lo)
            & (pl.col("last_month") <= hi)
            & pl.col("quantity_t").is_not_null()
        )
        .group_by(keys)
        .agg(sum=pl.col("quantity_t").clip(0.0, query.bounds.record_clip).sum())
    )


def release_sums(
    records: pl.DataFrame, query: AggregateQuery, coverage: Sequence[CoverageEntry]
) -> dict[tuple[str, ...], float]:
    """The DP path end to end (compute_release), as noisy sums by cell key (measure units)."""
    release = compute_release(records, query, coverage)
    assert release.sums is not None
    return dict(zip(query.public_keys(), release.sums, strict=True))


def _plain_by_key(plain: pl.DataFrame, query: AggregateQuery) -> dict[tuple[str, ...], float]:
    keys = [str(d) for d in query.group_by]
    return {tuple(row[:-1]): float(row[-1]) for row in plain.select([*keys, "sum"]).iter_rows()}


def _mean_abs_error(noisy: dict[tuple[str, ...], float],
                    truth: dict[tuple[str, ...], float]) -> float:
    return float(np.mean([abs(value - truth.get(key, 0.0)) for key, value in noisy.items()]))


# --- profile ------------------------------------------------------------------------------

#: Functions of the DP path whose cumulative time the profile reports, and what they do.
#: The Polars pipeline is lazy: `_in_scope` and `_in_coverage` only build the plan, and the
#: whole pipeline (filter, clip, partial sums, coverage, per-unit scaling, cell sums) runs
#: inside `_bounded_sums`'s collect.
PROFILE_STAGES: tuple[tuple[str, str, str], ...] = (
    ("_aggregate.py", "_in_scope", "Polars: build the query filter (lazy plan)"),
    ("_aggregate.py", "_bounded_sums", "Polars: run the pipeline (filter, clip, partial sums, "
                                       "coverage, per-unit scaling, cell sums)"),
    ("_aggregate.py", "_vector", "Python: dense public-key vector"),
    ("_dp.py", "laplace_mechanism", "OpenDP: build and certify the mechanism"),
    ("_dp.py", "release", "OpenDP: discrete Laplace sampler"),
)
_OTHER = "other: column selection, output lists"
_TOTAL = "compute_release (total)"


@dataclass(frozen=True)
class ProfileRow:
    """Seconds one stage of the DP path took in the profiled run."""

    stage: str
    function: str
    seconds: float
    share: float


def profile_release(
    records: pl.DataFrame, query: AggregateQuery, coverage: Sequence[CoverageEntry]
) -> list[ProfileRow]:
    """One compute_release under cProfile: seconds per stage of the DP path.

    A stage's cumulative time includes the Polars work it starts (the lazy pipeline runs in
    ``_bounded_sums``).
    The last two rows are what no listed stage accounts for, and the total.
    """
    profiler = cProfile.Profile()
    profiler.runcall(compute_release, records, query, coverage)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(stage_file: str, name: str) -> float:
        return sum(
            float(entry[3])
            for (filename, _line, function), entry in stats.items()
            if function == name and filename.endswith(stage_file)
        )

    total = cumulative("_aggregate.py", "compute_release")
    stages = [(label, name, cumulative(path, name)) for path, name, label in PROFILE_STAGES]
    other = total - sum(seconds for _, _, seconds in stages)
    stages += [(_OTHER, "", other), (_TOTAL, "compute_release", total)]
    return [
        ProfileRow(label, name, seconds, 100.0 * seconds / total if total else 0.0)
        for label, name, seconds in stages
    ]


# --- the entry ----------------------------------------------------------------------------

RESULT_COLUMNS = (
    Column("rows", "records", ",d"),
    Column("keys", "public keys", ",d"),
    Column("cells", "non-empty cells", ",d"),
    Column("repeats", "repeats", "d"),
    Column("baseline_s", "baseline s", ".3f"),
    Column("dp_s", "DP s", ".3f"),
    Column("ratio", "DP / baseline", ".2f"),
    Column("scale_t", "noise scale b (t)", ",.0f"),
    Column("mae_bounded_t", "MAE vs bounded exact (t)", ",.0f"),
    Column("mae_clipped_t", "MAE vs plain clipped (t)", ",.0f"),
    Column("mean_cell_t", "mean plain clipped cell (t)", ",.0f"),
)
PROFILE_COLUMNS = (
    Column("stage", "stage", numeric=False),
    Column("function", "function", numeric=False),
    Column("seconds", "s", ".3f"),
    Column("share", "% of total", ".1f"),
)


@dataclass(frozen=True)
class SizeResult:
    """One row of the result table (fields are the keys of RESULT_COLUMNS)."""

    rows: int
    keys: int
    cells: int
    repeats: int
    baseline_s: float
    dp_s: float
    ratio: float
    scale_t: float
    mae_bounded_t: float
    mae_clipped_t: float
    mean_cell_t: float


def _measure_size(size: Size, config: RunConfig) -> tuple[SizeResult, pl.DataFrame]:
    records = make_records(size.rows, seed=config.seed)
    query, coverage = make_query(), make_coverage()
    timings = measure_interleaved(
        {
            "baseline": lambda: plain_clipped_sums(records, query),
            "dp": lambda: compute_release(records, query, coverage),
        },
        repeats=size.repeats,
    )
    # Accuracy, from one more release (untimed).
    noisy = release_sums(records, query, coverage)
    exact_fp, _ = exact_cell_values(records, query, coverage)
    assert exact_fp is not None
    bounded = {
        key: value / FIXED_POINT_SCALE
        for key, value in zip(query.public_keys(), exact_fp, strict=True)
    }
    plain = _plain_by_key(plain_clipped_sums(records, query), query)
    result = SizeResult(
        rows=size.rows,
        keys=query.cell_count(),
        cells=len(plain),
        repeats=size.repeats,
        baseline_s=timings["baseline"].median,
        dp_s=timings["dp"].median,
        ratio=timings["dp"].ratio_to(timings["baseline"]),
        scale_t=UNIT_SUM_BOUND / EPSILON,
        mae_bounded_t=_mean_abs_error(noisy, bounded),
        mae_clipped_t=_mean_abs_error(noisy, plain),
        mean_cell_t=float(np.mean([plain.get(key, 0.0) for key in query.public_keys()])),
    )
    return result, records


def findings(results: Sequence[SizeResult], profile: Sequence[ProfileRow],
             query: AggregateQuery) -> list[str]:
    """The Markdown notes on the measured values: the ratios and what dominates the DP path."""
    ratios = ", ".join(f"{r.ratio:.1f}x at {r.rows:,} records" for r in results)
    by_name = {p.function: p for p in profile}
    total = by_name["compute_release"]
    opendp = by_name["laplace_mechanism"].seconds + by_name["release"].seconds
    vector = by_name["_vector"].seconds
    polars = total.seconds - opendp - vector
    ranked = sorted(profile[:-1], key=lambda p: p.seconds, reverse=True)
    parts = ", ".join(f"`{p.function or 'other'}` {p.share:.0f}%" for p in ranked[:4])
    notes = [
        f"**Result.** DP / baseline: {ratios}. In the profiled run ({total.seconds:.2f} s "
        f"under cProfile) Polars work over the records took {polars:.2f} s "
        f"({100 * polars / total.seconds:.1f}%; largest: {parts}); the dense public-key "
        f"vector took {vector * 1000:.1f} ms and OpenDP (mechanism and sampler) "
        f"{opendp * 1000:.1f} ms, costs that depend on the {query.cell_count():,} public keys "
        "only, not on the number of records.",
    ]
    return notes


def run(config: RunConfig) -> EntryResult:
    """Measure every size, then profile the DP path once at the largest size."""
    sizes = QUICK_SIZES if config.quick else FULL_SIZES
    results = []
    records = None
    for size in sizes:
        records = None  # free the previous size's frame before generating the next
        result, records = _measure_size(size, config)
        results.append(result)
    assert records is not None
    query = make_query()
    profile = profile_release(records, query, make_coverage())
    return EntryResult(
        tables=[
            Table(RESULT_COLUMNS, [asdict(r) for r in results]),
            Table(PROFILE_COLUMNS, [asdict(p) for p in profile],
                  title=f"Where the DP path's time goes ({sizes[-1].rows:,} records, one run)"),
        ],
        notes=findings(results, profile, query),
    )


DESCRIPTION = f"""
What it measures: `node._aggregate.compute_release`, the whole node-side DP grouped sum (query
filter, coverage, clipping to [0, {RECORD_CLIP:.0f}] t, per site-year L1 scaling to
{UNIT_SUM_BOUND:.0f} t, the dense vector over all public keys, OpenDP's discrete Laplace with
epsilon {EPSILON:g}), against what a non-private pipeline would run on the same frame: a plain
Polars filter, per-record clip to [0, {RECORD_CLIP:.0f}] t and
`group_by(commodity, country, flow).sum()` (the baseline).

Data: synthetic monthly records of {YEAR} (`bench.dp_groupby.make_records`, seeded numpy):
{len(COUNTRIES)} countries x {len(COMMODITIES)} commodities x {len(FLOWS)} flows (production,
import, export, consumption) = {len(COUNTRIES) * len(COMMODITIES) * len(FLOWS):,} public keys;
{N_SITES:,} sites (`site:<n>`, the contribution unit), each with one commodity, country and
stage and a lognormal activity; quantities lognormal (median about 12 t). Query: sum of
`quantity_t` by commodity, country, flow over period `{YEAR}`, epsilon {EPSILON:g},
record_clip {RECORD_CLIP:.0f}, unit_sum_bound {UNIT_SUM_BOUND:.0f}; coverage: one entry per
commodity covering every stage, flow and country generated.

How to read it:

- **DP / baseline** is the median DP time over the median baseline time, both measured in this
  run, interleaved (baseline, DP, baseline, DP, ...) after one warm-up each, on the same
  frame: the price of the privacy machinery on this data. Absolute seconds are only
  indicative (shared machine). It is above 1 by construction: to bound each site-year's
  contribution the DP path groups by (site-year, cell) and then by cell, and it filters by
  the declared coverage, where the baseline groups once by cell. The noise itself costs the
  same at any data size (one draw per public key).
- **MAE vs bounded exact**: mean absolute error, over all public keys, of the released sums
  against the noise-free *bounded* sums (`exact_cell_values`), i.e. the noise alone; expected
  to be close to the Laplace scale b = unit_sum_bound / epsilon.
- **MAE vs plain clipped**: the same release against the baseline's clipped sums, i.e. noise
  *plus* the downward bias of the per-site-year bound (a site whose clipped yearly total
  exceeds {UNIT_SUM_BOUND:.0f} t is scaled down). With ten times the records per site (10M
  rows over {N_SITES:,} sites) almost every site is scaled, so this error grows with the
  data: the bound, not the noise, dominates it. The bounds are public query parameters, to be
  chosen for the data.
- The profile table times one `compute_release` under cProfile at the largest size and
  splits it into the stages of the DP path (a stage's time includes the Polars work it runs).
"""

BENCHMARK = Benchmark(
    name="dp_groupby",
    title="Node-side DP grouped sum vs plain Polars group-by",
    description=DESCRIPTION,
    run=run,
)
