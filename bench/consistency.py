"""Entry ``consistency``: error of noisy hierarchical figures before and after post-processing.

A synthetic balance hierarchy (world > 5 regions > 4 countries each, x 2 stages x 3 flows =
120 leaf cells) gets Laplace noise of known scale at every level, as separate DP queries
would. ``coordinator.reconcile`` (non-negative weighted least squares, sums exact) then makes
it consistent. Reported: RMSE of the raw noisy figures and of the post-processed ones, per
level, as a ratio, over many seeded repetitions; and how often the post-processed 95% error
bars (``coordinator.simulate_errors``) cover the truth.
"""

from __future__ import annotations

import numpy as np

from bench._harness import Benchmark, Column, EntryResult, RunConfig, Table
from coordinator import Measurement, reconcile, simulate_errors

__all__ = ["BENCHMARK", "Hierarchy", "make_hierarchy", "run_once"]

REGIONS = 5
COUNTRIES_PER_REGION = 4
CELLS = 2 * 3  # stages x flows per country
SCALE = 1000.0  # Laplace scale b of every measured figure (t)


class Hierarchy:
    """Leaf truths and which leaves each region / the world sums (per stage x flow cell)."""

    def __init__(self, truth: np.ndarray) -> None:
        self.truth = truth  # (countries * CELLS,)
        n_countries = REGIONS * COUNTRIES_PER_REGION
        self.n = n_countries * CELLS
        self.leaf = lambda country, cell: country * CELLS + cell
        self.regions = [[self.leaf(r * COUNTRIES_PER_REGION + k, cell)
                         for k in range(COUNTRIES_PER_REGION)]
                        for cell in range(CELLS) for r in range(REGIONS)]
        self.world = [[self.leaf(c, cell) for c in range(n_countries)] for cell in range(CELLS)]

    def groups(self, parents: bool) -> list[tuple[str, tuple[int, ...]]]:
        out = [("country", (i,)) for i in range(self.n)]
        if parents:
            out += [("region", tuple(g)) for g in self.regions]
            out += [("world", tuple(g)) for g in self.world]
        return out


def make_hierarchy(rng: np.random.Generator) -> Hierarchy:
    """Lognormal leaf values (median 3,000 t), a third of them zero (no activity)."""
    n = REGIONS * COUNTRIES_PER_REGION * CELLS
    truth = rng.lognormal(np.log(3000.0), 1.2, size=n)
    truth[rng.random(n) < 1 / 3] = 0.0
    return Hierarchy(truth)


def run_once(h: Hierarchy, rng: np.random.Generator, *, parents: bool
             ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(truth, raw, post-processed) per level for one noise draw."""
    groups = h.groups(parents)
    truths = np.array([h.truth[list(g)].sum() for _, g in groups])
    raw = truths + rng.laplace(0.0, SCALE, size=len(groups))
    measurements = [Measurement(g, float(v), (SCALE,)) for (_, g), v in zip(groups, raw,
                                                                              strict=True)]
    x = reconcile(n_leaves=h.n, measurements=measurements)
    post = np.array([x[list(g)].sum() for _, g in groups])
    out = {}
    for level in ("country", "region", "world"):
        idx = [i for i, (lv, _) in enumerate(groups) if lv == level]
        if idx:
            out[level] = (truths[idx], raw[idx], post[idx])
    return out


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _coverage(h: Hierarchy, rng: np.random.Generator, draws: int) -> tuple[float, float]:
    groups = h.groups(True)
    truths = np.array([h.truth[list(g)].sum() for _, g in groups])
    raw = truths + rng.laplace(0.0, SCALE, size=len(groups))
    ms = [Measurement(g, float(v), (SCALE,)) for (_, g), v in zip(groups, raw, strict=True)]
    x = reconcile(n_leaves=h.n, measurements=ms)
    outputs = np.zeros((len(groups), h.n))
    for i, (_, g) in enumerate(groups):
        outputs[i, list(g)] = 1.0
    bars = simulate_errors(n_leaves=h.n, measurements=ms, estimate=x, outputs=outputs,
                           draws=draws, seed=int(rng.integers(2**31)))
    post = outputs @ x
    covered = np.abs(post - truths) <= bars.ci95
    raw_halfwidth = SCALE * np.log(20.0)  # exact 95% half-width of one Laplace term
    return float(np.mean(covered)), float(np.mean(bars.ci95) / raw_halfwidth)


def run(config: RunConfig) -> EntryResult:
    reps = 20 if config.quick else 300
    cov_reps, draws = (5, 100) if config.quick else (60, 300)
    rng = np.random.default_rng(config.seed)
    rows = []
    for parents, label in ((True, "countries, regions and world measured"),
                           (False, "countries measured only")):
        acc: dict[str, list[tuple[float, float]]] = {}
        for _ in range(reps):
            h = make_hierarchy(rng)
            for level, (t, r, p) in run_once(h, rng, parents=parents).items():
                acc.setdefault(level, []).append((_rmse(r, t) ** 2, _rmse(p, t) ** 2))
        for level in ("country", "region", "world"):
            if level not in acc:
                continue
            before = float(np.sqrt(np.mean([a for a, _ in acc[level]])))
            after = float(np.sqrt(np.mean([b for _, b in acc[level]])))
            rows.append({"setting": label, "level": level, "reps": reps,
                         "before": before, "after": after, "ratio": after / before})
    coverage = []
    widths = []
    for _ in range(cov_reps):
        c, w = _coverage(make_hierarchy(rng), rng, draws)
        coverage.append(c)
        widths.append(w)
    cov_row = {"reps": cov_reps, "draws": draws, "coverage": float(np.mean(coverage)),
               "width": float(np.mean(widths))}
    tables = [
        Table(title="RMSE before vs after post-processing (t)", columns=[
            Column("setting", "setting", numeric=False), Column("level", "level", numeric=False),
            Column("reps", "repetitions", ",d"), Column("before", "RMSE raw", ",.0f"),
            Column("after", "RMSE post-processed", ",.0f"),
            Column("ratio", "after / before", ".3f")], rows=rows),
        Table(title="Coverage of the post-processed 95% error bars", columns=[
            Column("reps", "repetitions", ",d"), Column("draws", "bootstrap draws", ",d"),
            Column("coverage", "share of figures whose 95% bar covers the truth", ".3f"),
            Column("width", "mean half-width / raw Laplace half-width", ".3f")],
            rows=[cov_row]),
    ]
    notes = [
        "**Reading it.** `after / before` below 1 is the error reduction from consistency "
        "post-processing. With parents measured, every level gains from the other levels' "
        "measurements (weighted least squares) and the leaves from non-negativity; with "
        "countries only (what `reconcile_balance` does on today's balances), only "
        "non-negativity helps, at the country level. Coverage near 0.95 means the simulated "
        "error bars are calibrated; the bootstrap is centred at the estimate, so coverage of "
        "cells clipped to zero can fall short of 0.95.",
    ]
    return EntryResult(tables=tables, notes=notes)


BENCHMARK = Benchmark(
    name="consistency",
    title="Consistency post-processing: RMSE before and after on a hierarchy",
    description=__doc__ or "",
    run=run,
)
