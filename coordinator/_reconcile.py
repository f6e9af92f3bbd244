"""Post-process a pooled :class:`Balance` into a consistent balance with regions and world.

Layout (see docs/balances.md): the leaves are the *published* base figures of each country x
stage row (production, imports, exports, consumption, recycling input, waste, opening and
closing stock). Each is a noisy measurement of itself; a world or region total measured by
its own query (``Balance.totals``, see :func:`coordinator.total_queries`) is a noisy
measurement of the sum of its countries' leaves. All are combined by non-negative weighted
least squares (:func:`coordinator._consistency.reconcile`), keeping each world figure at its
unconstrained least-squares value (clipped at 0) so that clipping noisy country cells at 0
does not bias it upwards; stock change and apparent
consumption are recomputed from the post-processed leaves, so the identity

    apparent consumption = production + imports - exports - (closing - opening stock)

holds exactly on every row; region (UN M49, plus EU27) and world rows are sums of their
countries' post-processed figures, so countries sum to regions and world exactly.

Suppressed figures stay suppressed: their values never reach the coordinator. An aggregate
is the sum of its *published* members and lists the members it lacks
(``missing_members``); it reveals nothing its members do not. A measured total is used (and
its figure marked ``measured``) only when none of its member cells is suppressed: otherwise
``total - published members`` would be the suppressed cells' sum. This is the residual rule
of :func:`coordinator.publishable_totals` with the suppressed cells' contributors unknown
(so any suppressed member fails it). Stock change and apparent consumption of an aggregate
are published only when none of their terms lacks a member. Error bars of every figure are
simulated through the post-processing (:func:`coordinator._consistency.simulate_errors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coordinator._consistency import Measurement, reconcile, simulate_errors
from coordinator._hierarchy import EU27, WORLD, RegionTable, region_table
from coordinator._market_models import (
    BASE_FIGURES,
    FIGURES,
    Level,
    Provenance,
    ReconciledBalance,
    ReconciledFigure,
    ReconciledRow,
)
from coordinator._models import Balance, BalanceFigure, CellStatus, NodeStatus

__all__ = ["IDENTITY_TERMS", "POST_PROCESSING", "reconcile_balance"]

#: Signed terms of the derived figures.
IDENTITY_TERMS: dict[str, tuple[tuple[str, float], ...]] = {
    "stock_change": (("closing_stock", 1.0), ("opening_stock", -1.0)),
    "apparent_consumption": (("production", 1.0), ("imports", 1.0), ("exports", -1.0),
                             ("closing_stock", -1.0), ("opening_stock", 1.0)),
}

POST_PROCESSING = (
    "non-negative weighted least squares over published country cells and the world and "
    "region totals measured by their own queries (weights 1/noise variance), each world "
    "figure kept at its unconstrained least-squares value (clipped at 0); derived "
    "figures and region/world totals are linear in the post-processed cells (identity and "
    "sums exact); error bars by parametric bootstrap of the Laplace noise through the same "
    "post-processing"
)


def _scales(figure: BalanceFigure) -> tuple[float, ...]:
    if figure.noise_scales:
        return tuple(figure.noise_scales)
    if figure.std:  # a balance stored before noise scales were kept: one equivalent term
        return (figure.std / math.sqrt(2.0),)
    return ()


class _Spec:
    """One output figure: its coefficients over the leaves and its status."""

    def __init__(self, status: CellStatus, coefs: dict[int, float], raw: float | None,
                 missing: list[str], measured: bool = False) -> None:
        self.status, self.coefs, self.raw, self.missing = status, coefs, raw, missing
        self.measured = measured


def _aggregate_status(statuses: list[CellStatus]) -> CellStatus:
    if CellStatus.PUBLISHED in statuses:
        return CellStatus.PUBLISHED
    if CellStatus.SUPPRESSED in statuses:
        return CellStatus.SUPPRESSED
    return CellStatus.NOT_COVERED


def _derived(base: dict[str, _Spec], name: str) -> _Spec:
    terms = [(base[f], s) for f, s in IDENTITY_TERMS[name]]
    present = [(t, s) for t, s in terms if t.status is not CellStatus.NOT_COVERED or t.missing]
    if not present:
        return _Spec(CellStatus.NOT_COVERED, {}, None, [])
    missing = sorted({m for t, _ in present for m in t.missing})
    if missing or any(t.status is CellStatus.SUPPRESSED for t, _ in present):
        return _Spec(CellStatus.SUPPRESSED, {}, None, missing)
    coefs: dict[int, float] = {}
    for t, s in present:
        for leaf, c in t.coefs.items():
            coefs[leaf] = coefs.get(leaf, 0.0) + s * c
    raw = sum(s * (t.raw or 0.0) for t, s in present)
    return _Spec(CellStatus.PUBLISHED, coefs, raw, [])


@dataclass(frozen=True)
class _Total:
    value: float
    scales: tuple[float, ...]


def _measured_totals(balance: Balance) -> dict[tuple[str, str, str], _Total]:
    """Published measured totals by (area, stage, figure)."""
    out: dict[tuple[str, str, str], _Total] = {}
    for t in balance.totals:
        fig = t.value
        if fig.status is not CellStatus.PUBLISHED or fig.value is None:
            continue
        scales = _scales(fig)
        if not scales:
            raise ValueError(f"{t.area} {t.stage} {t.figure}: no noise scale")
        out[(t.area, t.stage, t.figure)] = _Total(fig.value, scales)
    return out


def reconcile_balance(balance: Balance, *, regions: RegionTable | None = None,
                      draws: int = 400, seed: int = 20240601,
                      keep_world_sums: bool = True) -> ReconciledBalance:
    """The consistent balance of ``balance``: countries, M49 regions, EU27 and world.

    ``keep_world_sums`` (default): each world figure (stage x base figure) keeps its
    unconstrained weighted least-squares value, clipped at 0, when non-negativity binds on
    its countries (:func:`coordinator._consistency.reconcile`, ``keep_sums``): clipping the
    noisy country cells alone biases the world total upwards. ``False``: plain
    non-negative least squares (the former post-processing, measured in BENCHMARKS.md).
    """
    table = regions or region_table()
    measurements: list[Measurement] = []
    country_specs: dict[tuple[str, str], dict[str, _Spec]] = {}
    for row in balance.rows:
        specs: dict[str, _Spec] = {}
        for name in BASE_FIGURES:
            fig: BalanceFigure = getattr(row, name)
            if fig.status is CellStatus.PUBLISHED and fig.value is not None:
                scales = _scales(fig)
                if not scales:
                    raise ValueError(f"{row.country} {row.stage} {name}: no noise scale")
                leaf = len(measurements)
                measurements.append(Measurement((leaf,), fig.value, scales))
                specs[name] = _Spec(CellStatus.PUBLISHED, {leaf: 1.0}, fig.value, [])
            else:
                specs[name] = _Spec(fig.status, {}, None, [])
        country_specs[(row.country, row.stage)] = specs

    measured_totals = _measured_totals(balance)
    # (level, area, stage) -> figure -> spec
    outputs: dict[tuple[Level, str, str], dict[str, _Spec]] = {}
    stages = sorted({s for _, s in country_specs})
    for (country, stage), specs in country_specs.items():
        outputs[(Level.COUNTRY, country, stage)] = specs
    groups: list[tuple[Level, str, set[str]]] = [
        (Level.REGION, r, set(table.members(r))) for r in table.regions()]
    groups.append((Level.REGION, EU27, set(table.eu27)))
    groups.append((Level.WORLD, WORLD, set(table.region_of)))
    for level, area, members in groups:
        for stage in stages:
            inside = {c: sp for (c, s), sp in country_specs.items() if s == stage and c in members}
            if not inside:
                continue
            agg: dict[str, _Spec] = {}
            for name in BASE_FIGURES:
                parts = {c: sp[name] for c, sp in inside.items()}
                status = _aggregate_status([p.status for p in parts.values()])
                missing = sorted(c for c, p in parts.items() if p.status is CellStatus.SUPPRESSED)
                coefs = {leaf: 1.0 for p in parts.values() if p.status is CellStatus.PUBLISHED
                         for leaf in p.coefs}
                raw = (sum(p.raw or 0.0 for p in parts.values()
                           if p.status is CellStatus.PUBLISHED)
                       if status is CellStatus.PUBLISHED else None)
                total = measured_totals.get((area, stage, name))
                if total is not None and coefs and not missing:
                    # the total measures exactly the published leaves (none suppressed)
                    measurements.append(Measurement(tuple(sorted(coefs)), total.value,
                                                    total.scales))
                    agg[name] = _Spec(status, coefs, total.value, [], measured=True)
                    continue
                agg[name] = _Spec(status, coefs, raw, missing)
            outputs[(level, area, stage)] = agg
    for specs in outputs.values():
        for name in IDENTITY_TERMS:
            specs[name] = _derived(specs, name)

    keep: list[list[int]] = []
    if keep_world_sums:
        for (level, _, _), specs in outputs.items():
            if level is Level.WORLD:
                keep += [sorted(specs[name].coefs) for name in BASE_FIGURES
                         if specs[name].status is CellStatus.PUBLISHED and specs[name].coefs]
    n = len(measurements)
    estimate = (reconcile(n_leaves=n, measurements=measurements, keep_sums=keep) if n
                else np.zeros(0))
    published = [(key, name) for key, specs in outputs.items() for name in FIGURES
                 if specs[name].status is CellStatus.PUBLISHED]
    matrix = np.zeros((len(published), n))
    for i, (key, name) in enumerate(published):
        for leaf, c in outputs[key][name].coefs.items():
            matrix[i, leaf] = c
    values = matrix @ estimate
    if n and published:
        bars = simulate_errors(n_leaves=n, measurements=measurements, estimate=estimate,
                               outputs=matrix, draws=draws, seed=seed, keep_sums=keep)
        std, ci95 = bars.std, bars.ci95
    else:
        std = ci95 = np.zeros(len(published))
    index = {p: i for i, p in enumerate(published)}

    rows: list[ReconciledRow] = []
    order = {Level.WORLD: 0, Level.REGION: 1, Level.COUNTRY: 2}
    for key in sorted(outputs, key=lambda k: (order[k[0]], k[1], k[2])):
        level, area, stage = key
        figures: dict[str, ReconciledFigure] = {}
        for name in FIGURES:
            spec = outputs[key][name]
            if (key, name) in index:
                i = index[(key, name)]
                figures[name] = ReconciledFigure(
                    status=spec.status, value=float(values[i]), std=float(std[i]),
                    ci95=float(ci95[i]), raw_value=spec.raw, missing_members=spec.missing,
                    measured=spec.measured)
            else:
                figures[name] = ReconciledFigure(status=spec.status,
                                                 missing_members=spec.missing)
        rows.append(ReconciledRow(level=level, area=area, stage=stage, **figures))
    return ReconciledBalance(
        commodity=balance.commodity, period=balance.period, unit=balance.unit, rows=rows,
        provenance=Provenance(
            query_ids=list(balance.query_ids),
            answered_nodes=[o.node_id for o in balance.nodes if o.status is NodeStatus.ANSWERED],
            nodes=list(balance.nodes), epsilon_by_node=balance.epsilon_by_node,
            unit_sum_bound=balance.unit_sum_bound, stock_unit_bound=balance.stock_unit_bound,
            post_processing=POST_PROCESSING, error_bar_draws=draws,
            reference_data=[table.version]),
        prices=list(balance.prices),
    )
