"""Entry ``synthetic_data``: DP synthesizers (fit + sample time, quality, privacy risk).

Everything runs on the same generated company-like records in the same process: the DP
synthesizers at several epsilons and SDV's non-private GaussianCopula as the baseline, so
quality differences and time ratios are measured under the same load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from bench._harness import Benchmark, Column, EntryResult, RunConfig, Table
from synthetic import (
    PublicDomain,
    evaluate_release,
    fit_sdv_baseline_not_private,
    fit_synthesizer,
    split_holdout,
)

__all__ = ["BENCHMARK", "make_company_records", "make_domain"]

COUNTRIES = ("COD", "AUS", "CHL", "CHN", "IDN", "ARG", "ZAF", "ZMB", "PHL", "KOR", "JPN",
             "USA", "DEU", "CAN", "BRA", "PER")
COMMODITIES = ("cobalt", "lithium", "nickel", "copper", "natural_graphite", "rare_earths")
STAGES = ("mining", "refining", "manufacturing")
FLOWS = ("production", "export", "import", "consumption", "stock_level", "price")
FLOW_SHARES = (0.3, 0.2, 0.1, 0.15, 0.1, 0.15)
PERIODS = tuple(f"2024-{m:02d}" for m in range(1, 13))
ROWS_PER_UNIT = 4
EPSILONS = (0.5, 1.0, 4.0)
METHODS = ("dp_copula", "mst")
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (10_000,)


def make_domain() -> PublicDomain:
    """The public domain of the bench: the coverage-like code lists, 2024's months."""
    return PublicDomain(periods=PERIODS, quantity_max_t=50_000.0, price_max_usd_t=500_000.0,
                        commodities=COMMODITIES, stages=STAGES, countries=COUNTRIES,
                        partner_countries=COUNTRIES)


def make_company_records(rows: int, *, seed: int) -> pl.DataFrame:
    """``rows`` valid 2024 records of many units (sites and contracts), ~4 rows each.

    A unit has one country (skewed towards large producers), commodity and stage;
    quantities are lognormal around a level that depends on the commodity and the stage;
    prices depend on the commodity and contract type; trade flows have a partner country
    (skewed towards China), price records a contract type and no quantity.
    """
    rng = np.random.default_rng(seed)
    units = max(1, rows // ROWS_PER_UNIT)
    weights = 1.0 / np.arange(1, len(COUNTRIES) + 1)
    u_country = rng.choice(len(COUNTRIES), units, p=weights / weights.sum())
    u_commodity = rng.integers(0, len(COMMODITIES), units)
    u_stage = rng.choice(len(STAGES), units, p=(0.6, 0.3, 0.1))
    u_level = rng.normal(3.0 + 0.6 * u_commodity - 0.5 * u_stage, 0.8, units)
    unit = rng.integers(0, units, rows)
    flow = np.asarray(FLOWS)[rng.choice(len(FLOWS), rows, p=FLOW_SHARES)]
    trade = np.isin(flow, ("export", "import"))
    is_price = flow == "price"
    partner_w = np.where(np.asarray(COUNTRIES) == "CHN", 8.0, 1.0)
    partner = np.asarray(COUNTRIES)[rng.choice(len(COUNTRIES), rows,
                                               p=partner_w / partner_w.sum())]
    long_term = rng.random(rows) < 0.6
    quantity = np.exp(u_level[unit] + rng.normal(0.0, 0.7, rows))
    price = np.exp(9.0 + 0.35 * u_commodity[unit] - 0.1 * long_term + rng.normal(0, 0.15, rows))
    month = rng.integers(0, 12, rows)
    return pl.DataFrame({
        "period": np.asarray(PERIODS)[month].tolist(),
        "commodity": np.asarray(COMMODITIES)[u_commodity[unit]].tolist(),
        "stage": np.asarray(STAGES)[u_stage[unit]].tolist(),
        "flow": flow.tolist(),
        "country": np.asarray(COUNTRIES)[u_country[unit]].tolist(),
        "partner_country": np.where(trade, partner, None).tolist(),
        "contract_type": np.where(is_price, np.where(long_term, "long_term", "spot"),
                                  None).tolist(),
        "quantity_t": np.where(is_price, np.nan, quantity),
        "price_usd_t": np.where(is_price, price, np.nan),
        "contribution_unit": [f"site:{u}" for u in unit],
    }, schema_overrides={"partner_country": pl.String, "contract_type": pl.String}).with_columns(
        pl.col("quantity_t").fill_nan(None), pl.col("price_usd_t").fill_nan(None))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@dataclass
class _Row:
    rows: int
    method: str
    epsilon: float | None
    seconds: float
    quality: float
    shapes: float
    pairs: float
    delta_vs_sdv: float | None = None


def _risk_row(name: str, report: Any) -> dict[str, Any]:
    def fmt(est: Any) -> str:
        return f"{est.risk:.3f} [{est.ci_low:.3f}, {est.ci_high:.3f}]"
    return {
        "method": name,
        "singling_out": fmt(report.singling_out),
        "linkability": fmt(report.linkability),
        "inference_country": fmt(report.inference["country"]),
        "inference_quantity": fmt(report.inference["quantity_t"]),
        "dcr_share": report.dcr.share_closer_to_real,
        "dcr_median": report.dcr.median_synthetic_to_real,
    }


def run(config: RunConfig) -> EntryResult:
    """Fit, sample and evaluate every method at every size and epsilon."""
    domain = make_domain()
    sizes = QUICK_SIZES if config.quick else FULL_SIZES
    rows_out: list[_Row] = []
    risk_rows: list[dict[str, Any]] = []
    for size in sizes:
        records = make_company_records(size, seed=config.seed)
        train, holdout = split_holdout(records, fraction=0.2, seed=config.seed)
        baseline, seconds = _timed(
            lambda train=train: fit_sdv_baseline_not_private(train).sample(train.height))
        base_report = evaluate_release(train, baseline, holdout=holdout, seed=config.seed,
                                       n_attacks=500)
        q = base_report.quality
        rows_out.append(_Row(size, "SDV GaussianCopula (not DP)", None, seconds, q.overall,
                             q.column_shapes, q.column_pair_trends))
        if size == sizes[0]:
            risk_rows.append(_risk_row("SDV GaussianCopula (not DP)", base_report))
        for method in METHODS:
            for epsilon in EPSILONS:
                def fit_and_sample(method: str = method, epsilon: float = epsilon,
                                   train: pl.DataFrame = train) -> pl.DataFrame:
                    fitted = fit_synthesizer(train, method=method,  # type: ignore[arg-type]
                                             epsilon=epsilon, domain=domain,
                                             rows_per_unit=ROWS_PER_UNIT, seed=config.seed)
                    return fitted.sample(train.height, seed=config.seed)
                synthetic, seconds = _timed(fit_and_sample)
                report = evaluate_release(train, synthetic, holdout=holdout,
                                          seed=config.seed, n_attacks=500)
                q = report.quality
                rows_out.append(_Row(size, method, epsilon, seconds, q.overall,
                                     q.column_shapes, q.column_pair_trends,
                                     q.overall - base_report.quality.overall))
                if size == sizes[0] and epsilon == 1.0:
                    risk_rows.append(_risk_row(f"{method} (epsilon 1)", report))
    quality = Table(
        columns=(
            Column("rows", "records", ",d"),
            Column("method", "method", numeric=False),
            Column("epsilon", "epsilon", ".1f"),
            Column("seconds", "fit + sample (s)", ".2f"),
            Column("quality", "quality", ".3f"),
            Column("shapes", "column shapes", ".3f"),
            Column("pairs", "pair trends", ".3f"),
            Column("delta_vs_sdv", "quality - SDV", "+.3f"),
        ),
        rows=[vars(r) for r in rows_out],
        title="Time and SDMetrics quality (same data, same run)",
    )
    risks = Table(
        columns=(
            Column("method", "synthesizer", numeric=False),
            Column("singling_out", "singling out risk [95% CI]", numeric=False),
            Column("linkability", "linkability", numeric=False),
            Column("inference_country", "inference: country", numeric=False),
            Column("inference_quantity", "inference: quantity_t", numeric=False),
            Column("dcr_share", "DCR: share closer to train", ".3f"),
            Column("dcr_median", "DCR median", ".4f"),
        ),
        rows=risk_rows,
        title=f"Privacy risk (attacks after Anonymeter), {sizes[0]:,} records",
    )
    return EntryResult(tables=(quality, risks), notes=_findings(rows_out))


def _findings(rows: list[_Row]) -> list[str]:
    notes = []
    for r in rows:
        if r.epsilon == 1.0 and r.delta_vs_sdv is not None:
            verdict = "meets" if r.delta_vs_sdv >= -0.05 else "misses"
            notes.append(
                f"{r.method} at epsilon 1 on {r.rows:,} records: quality {r.quality:.3f}, "
                f"{r.delta_vs_sdv:+.3f} vs SDV's non-DP GaussianCopula ({verdict} the "
                f"'within 0.05' target); fit + sample {r.seconds:.2f} s."
            )
    big = [r for r in rows if r.rows == max(x.rows for x in rows) and r.epsilon is not None]
    if big:
        slowest = max(big, key=lambda r: r.seconds)
        notes.append(f"Slowest DP fit + sample at {slowest.rows:,} records: {slowest.method} "
                     f"{slowest.seconds:.2f} s (target: under 30 s for 100k).")
    return notes


DESCRIPTION = f"""
What it measures: `synthetic.fit_synthesizer` + `FittedSynthesizer.sample` (as many rows as
the training set) for the DP Gaussian copula (`dp_copula`) and MST (`mst`) at epsilon
{", ".join(str(e) for e in EPSILONS)} (pure DP, delta 0), against SDV 2.0's non-private
`GaussianCopulaSynthesizer` (fit + sample) on the same training records in the same run.
Quality is SDMetrics' QualityReport (column shapes and column pair trends, at most 20,000
rows of each side) against the training records. Privacy risk: the singling-out,
linkability and inference attacks of Anonymeter (Giomi et al., PoPETs 2023) re-implemented
in `synthetic._evaluate` (500 targets each, 95% confidence intervals; a control set of
held-out units gives the baseline) and distance to closest record (share of synthetic rows
closer to a training record than to a holdout record of an equal-size set; 0.5 = no
memorisation).

Data: generated company-like 2024 records (`make_company_records`): units (sites) of 16
countries x 6 commodities x 3 stages, about {ROWS_PER_UNIT} rows per unit-year, monthly
periods, 6 flows with partner countries on trade and contract types on prices. 20% of the
units are held out. Each unit-year contributes at most {ROWS_PER_UNIT} rows to the fit
(`rows_per_unit`). Times are single runs (wall clock), including OpenDP calibration.
"""

BENCHMARK = Benchmark(
    name="synthetic_data",
    title="DP synthetic data: fit + sample time, quality vs SDV, privacy risk",
    description=DESCRIPTION,
    run=run,
)
