"""Entry ``consistency``: error of noisy hierarchical figures before and after post-processing.

A synthetic balance hierarchy (world > 5 regions > 4 countries each, x 2 stages x 3 flows =
120 leaf cells) gets Laplace noise of known scale at every level, as separate DP queries
would. ``coordinator.reconcile`` (non-negative weighted least squares, sums exact) then makes
it consistent. Reported: RMSE of the raw noisy figures and of the post-processed ones, per
level, as a ratio, over many seeded repetitions; and how often the post-processed 95% error
bars (``coordinator.simulate_errors``) cover the truth.

Second part, the *live* hierarchy: the balance's real layout (``coordinator.reconcile_balance``
on a :class:`coordinator.Balance` with the UN M49 regions of ``regions.csv``) and the real
noise: every company whose declared coverage meets a cell adds one Laplace term of scale
``unit bound / epsilon`` to it, and one to every measured total whose area it meets (cells
and totals with fewer than 3 companies suppressed). Two synthetic markets in 10 countries:
*mostly single-country* (20 miners and 12 refiners in one country each, 6 traders covering 6
countries) and *trader-heavy* (10 miners, 6 refiners, 24 traders covering 8 countries).
Compared: epsilon splits of the flows' 2/3 of the balance epsilon (stocks keep 1/3) between
country cells and measured world and region totals (``coordinator.EPSILON_SPLITS`` and two
smaller world shares), each read with the two post-processings (plain non-negative least
squares, and world sums kept: ``reconcile_balance(keep_world_sums=...)``), per level,
against the truth of the bounded sums (clipping bias excluded). Every design sees the same
markets and the same unit noise draws (common random numbers), scaled to its epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench._harness import Benchmark, Column, EntryResult, RunConfig, Table
from coordinator import (
    BASE_FIGURES,
    EPSILON_SPLITS,
    MEASURED_REGIONS,
    Balance,
    BalanceFigure,
    BalanceRow,
    CellStatus,
    Level,
    MeasuredTotal,
    Measurement,
    reconcile,
    reconcile_balance,
    region_table,
    simulate_errors,
)
from protocols import Commodity

__all__ = ["BENCHMARK", "Hierarchy", "LiveMarket", "live_once", "make_hierarchy",
           "make_live_market", "run_once"]

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


# --- the live balance hierarchy --------------------------------------------------------------

LIVE_BOUND = 12_000.0  # cobalt's default unit bound (t)
LIVE_EPSILON = 1.0
_FLOWS = ("production", "imports", "exports")
_STAGES = ("mining", "refining")
_LIVE_COUNTRIES = ("COD", "ZMB", "ZAF", "AUS", "CAN", "CHN", "IDN", "JPN", "FIN", "DEU")


@dataclass
class LiveMarket:
    """Companies with their coverage (cells they add noise to) and true bounded sums."""

    cover: list[set[tuple[str, str, str]]]  # per company: (country, stage, figure) cells
    truth: dict[tuple[str, str, str], float]  # per cell: sum over companies


def make_live_market(rng: np.random.Generator, *, traders: int = 6, trader_countries: int = 6,
                     miners: int = 20, refiners: int = 12) -> LiveMarket:
    """Miners and refiners in one country each; traders in ``trader_countries`` countries
    (imports and exports of both stages). Default: 20 miners, 12 refiners, 6 traders in 6
    countries."""
    cover: list[set[tuple[str, str, str]]] = []
    truth: dict[tuple[str, str, str], float] = {}

    def company(cells: set[tuple[str, str, str]], scale: float) -> None:
        cover.append(cells)
        share = rng.dirichlet(np.ones(len(cells)))  # one unit-year's bounded total, split
        total = min(rng.lognormal(np.log(scale), 0.8), LIVE_BOUND) * 4  # 4 sites
        for cell, w in zip(sorted(cells), share, strict=True):
            truth[cell] = truth.get(cell, 0.0) + float(w * total)

    for _ in range(miners):
        c = str(rng.choice(_LIVE_COUNTRIES))
        company({(c, "mining", f) for f in ("production", "exports")}, 6_000.0)
    for _ in range(refiners):
        c = str(rng.choice(_LIVE_COUNTRIES))
        company({(c, "refining", f) for f in _FLOWS}, 6_000.0)
    for _ in range(traders):
        cs = rng.choice(_LIVE_COUNTRIES, size=trader_countries, replace=False)
        company({(str(c), s, f) for c in cs for s in _STAGES for f in ("imports", "exports")},
                8_000.0)
    return LiveMarket(cover, truth)


@dataclass(frozen=True)
class Design:
    """An epsilon split of the balance's flows (shares of the balance epsilon; the stocks'
    1/3 is the same in every design)."""

    name: str
    country: float
    world: float = 0.0
    regions: float = 0.0  # all five regions together (each gets a fifth)


def _design(name: str, split: dict[str, float]) -> Design:
    return Design(name, split["flows_country"], split.get("flows_world", 0.0),
                  split.get("flows_regions", 0.0))


_FLOWS_SHARE = 1 - EPSILON_SPLITS["none"]["stocks"]  # 2/3 of the balance epsilon
#: Designs compared, all spending the flows' 2/3 of the balance epsilon.
LIVE_DESIGNS: tuple[Design, ...] = (
    _design("countries only (totals=none)", EPSILON_SPLITS["none"]),
    Design("countries + world 1/12 of flows", _FLOWS_SHARE * 11 / 12, world=_FLOWS_SHARE / 12),
    Design("countries + world 1/6 of flows", _FLOWS_SHARE * 5 / 6, world=_FLOWS_SHARE / 6),
    _design("countries + world 1/2 of flows (totals=world)", EPSILON_SPLITS["world"]),
    _design("countries + world 1/4 + regions 1/4 of flows (totals=world+regions)",
            EPSILON_SPLITS["world+regions"]),
)
#: Synthetic markets: keyword arguments of :func:`make_live_market`.
LIVE_MARKETS: dict[str, dict[str, int]] = {
    "mostly single-country": {},
    "trader-heavy": {"miners": 10, "refiners": 6, "traders": 24, "trader_countries": 8},
}


@dataclass
class LiveNoise:
    """Unit Laplace draws shared by every design (common random numbers): one per company
    and country cell, and one per company and total (area, stage, flow)."""

    cells: dict[tuple[str, str, str], np.ndarray]
    totals: dict[tuple[str, str, str], np.ndarray]


def draw_live_noise(m: LiveMarket, rng: np.random.Generator) -> LiveNoise:
    table = region_table()
    cells = sorted({c for cov in m.cover for c in cov})
    noise = {cell: rng.laplace(0.0, 1.0, size=sum(cell in cov for cov in m.cover))
             for cell in cells}
    totals = {}
    for area, members in [("World", set(table.region_of))] + [
            (r, set(table.members(r))) for r in MEASURED_REGIONS]:
        for stage in _STAGES:
            for name in _FLOWS:
                inside = {k for k in cells if k[0] in members and k[1:] == (stage, name)}
                n = sum(bool(cov & inside) for cov in m.cover)
                totals[(area, stage, name)] = rng.laplace(0.0, 1.0, size=n)
    return LiveNoise(noise, totals)


def _figure(value: float, scales: list[float]) -> BalanceFigure:
    return BalanceFigure(status=CellStatus.PUBLISHED, value=value, noise_scales=scales)


#: (truth, raw, post-processed with world sums kept, post-processed by plain clipping,
#: whether the kept post-processing's 95% error bar covers the truth, or NaN if not simulated)
LiveFigure = tuple[float, float, float, float, float]


def live_once(m: LiveMarket, noise: LiveNoise, design: Design, *, draws: int = 2
              ) -> dict[str, list[LiveFigure]]:
    """Every fully published flow figure of one noisy balance, per level."""
    eps = LIVE_EPSILON
    b_country = LIVE_BOUND / (eps * design.country)
    table = region_table()
    cells = sorted({c for cov in m.cover for c in cov})
    raw: dict[tuple[str, str, str], float] = {}
    suppressed = set()
    count = {cell: sum(cell in cov for cov in m.cover) for cell in cells}
    for cell in cells:
        if count[cell] < 3:
            suppressed.add(cell)
        raw[cell] = m.truth.get(cell, 0.0) + b_country * float(noise.cells[cell].sum())
    empty = BalanceFigure(status=CellStatus.NOT_COVERED)
    rows = []
    for country, stage in sorted({(c, s) for c, s, _ in cells}):
        figs = {}
        for name in BASE_FIGURES:
            key = (country, stage, name)
            if key not in raw:
                figs[name] = empty
            elif key in suppressed:
                figs[name] = BalanceFigure(status=CellStatus.SUPPRESSED)
            else:
                figs[name] = _figure(raw[key], [b_country] * count[key])
        rows.append(BalanceRow(country=country, stage=stage, **figs, stock_change=empty,
                               apparent_consumption=empty))
    areas = [("world", "World", set(table.region_of))] + [
        ("region", r, set(table.members(r))) for r in MEASURED_REGIONS]
    measured: list[MeasuredTotal] = []
    direct: dict[tuple[str, str, str], float] = {}
    for level, area, members in areas:
        share = design.world if level == "world" else design.regions / len(MEASURED_REGIONS)
        if share <= 0:
            continue
        b = LIVE_BOUND / (eps * share)
        for stage in _STAGES:
            for name in _FLOWS:
                z = noise.totals[(area, stage, name)]
                if len(z) < 3:
                    continue
                t = sum(m.truth.get(k, 0.0) for k in cells
                        if k[0] in members and k[1:] == (stage, name))
                v = t + b * float(z.sum())
                direct[(area, stage, name)] = v
                measured.append(MeasuredTotal(level=level, area=area, stage=stage,
                                              figure=name, value=_figure(v, [b] * len(z)),
                                              query_id=area))
    balance = Balance(commodity=Commodity.COBALT, period="2024", rows=rows, query_ids=[], nodes=[],
                      epsilon_by_node={}, unit_sum_bound=LIVE_BOUND,
                      stock_unit_bound=LIVE_BOUND / 8, totals=measured)
    kept = reconcile_balance(balance, draws=draws, keep_world_sums=True)
    clipped = reconcile_balance(balance, draws=2, keep_world_sums=False)
    out: dict[str, list[LiveFigure]] = {}
    for row in kept.rows:
        if row.stage not in _STAGES or row.area == "EU27":
            continue
        members = ({row.area} if row.level is Level.COUNTRY
                   else next(mm for _, a, mm in areas if a == row.area))
        other = clipped.row(row.area, row.stage)
        assert other is not None
        for name in _FLOWS:
            f = row.figure(name)
            if f.status is not CellStatus.PUBLISHED or f.partial or f.value is None:
                continue
            keys = [k for k in cells if k[0] in members and k[1] == row.stage and k[2] == name]
            t = sum(m.truth.get(k, 0.0) for k in keys)
            r = (raw[(row.area, row.stage, name)] if row.level is Level.COUNTRY
                 else direct.get((row.area, row.stage, name),
                                 sum(raw[k] for k in keys)))
            covered = (float(abs(f.value - t) <= (f.ci95 or 0.0)) if draws > 2
                       else float("nan"))
            out.setdefault(str(row.level), []).append(
                (t, r, f.value, other.figure(name).value or 0.0, covered))
    return out


def _live_rows(config: RunConfig, rng: np.random.Generator) -> list[dict[str, object]]:
    reps = 10 if config.quick else 100
    cov_reps, draws = (3, 100) if config.quick else (20, 200)
    rows: list[dict[str, object]] = []
    for market, kwargs in LIVE_MARKETS.items():
        acc: dict[tuple[str, str], list[LiveFigure]] = {}
        for rep in range(reps):
            m = make_live_market(rng, **kwargs)
            noise = draw_live_noise(m, rng)  # the same noise draws for every design
            for design in LIVE_DESIGNS:
                got = live_once(m, noise, design, draws=draws if rep < cov_reps else 2)
                for level, figures in got.items():
                    acc.setdefault((design.name, level), []).extend(figures)
        for design in LIVE_DESIGNS:
            for level in ("country", "region", "world"):
                figures = acc.get((design.name, level), [])
                if not figures:
                    continue
                arr = np.array(figures)
                before = _rmse(arr[:, 1], arr[:, 0])
                after = _rmse(arr[:, 2], arr[:, 0])
                rows.append({"market": market, "setting": design.name, "level": level,
                             "figures": len(arr), "before": before,
                             "clipped": _rmse(arr[:, 3], arr[:, 0]), "after": after,
                             "ratio": after / before,
                             "coverage": float(np.nanmean(arr[:, 4]))})
    return rows


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
    live = _live_rows(config, rng)
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
        Table(title=f"Live balance hierarchy, epsilon {LIVE_EPSILON:g}: RMSE by epsilon split "
                    "(t)", columns=[
            Column("market", "market", numeric=False),
            Column("setting", "flows' epsilon split", numeric=False),
            Column("level", "level", numeric=False),
            Column("figures", "figures", ",d"), Column("before", "RMSE raw", ",.0f"),
            Column("clipped", "RMSE post-processed, plain clipping", ",.0f"),
            Column("after", "RMSE post-processed, world sums kept", ",.0f"),
            Column("ratio", "kept / raw", ".3f"),
            Column("coverage", "95% bar coverage (kept)", ".3f")], rows=live),
    ]
    notes = [
        "**Reading it.** `after / before` below 1 is the error reduction from consistency "
        "post-processing. With parents measured, every level gains from the other levels' "
        "measurements (weighted least squares) and the leaves from non-negativity; with "
        "countries only (a balance without measured totals), only "
        "non-negativity helps, at the country level. Coverage near 0.95 means the simulated "
        "error bars are calibrated; the bootstrap is centred at the estimate, so coverage of "
        "cells clipped to zero can fall short of 0.95.",
        "**Live hierarchy.** Raw region and world figures are the direct measurements when "
        "measured, else the sums of raw country cells; only figures without suppressed "
        "members are compared. A sum of country cells carries one noise term per company "
        "*and country it covers*, a measured total one per company: for single-country "
        "companies both carry the same number of terms, so a total measured at a fraction "
        "of the country cells' epsilon is noisier than the sum it would correct, and "
        "moving epsilon to it costs every country cell. Coverage: share of post-processed "
        "figures (world sums kept) whose simulated 95% error bar covers the truth, over the "
        "first repetitions.",
    ]
    return EntryResult(tables=tables, notes=notes)


BENCHMARK = Benchmark(
    name="consistency",
    title="Consistency post-processing: RMSE before and after on a hierarchy",
    description=__doc__ or "",
    run=run,
)
