"""Volume-weighted average prices (VWAP) from two pooled sums, with simulated error bars.

``VWAP = sum(price x quantity) / sum(quantity)`` per cell (contract type x period) of the
price flow. Nodes release the numerator as the ``value_usd`` measure (each record's
``price_usd_t x quantity_t``, clipped and bounded in USD, see :mod:`node._aggregate`) and the
denominator as the ``quantity_t`` measure of the same price records (priced tonnes), in two
sum queries at half the epsilon each (:func:`vwap_queries`). A price record without a
quantity is in neither sum, so both sums run over the same records.

The ratio of two noisy sums has no closed-form error: :func:`ratio_error` simulates it by a
parametric bootstrap at the estimate, drawing both sums' Laplace noise from their public
scales (every contributing node's scale), as :func:`coordinator.simulate_errors` does for
balances. Error bars cover DP noise only (not clipping bias).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from coordinator._models import CellStatus, PooledCell, PooledResult, PriceFigure
from protocols import AggregateQuery, Bounds, Commodity, ContractType, Flow, Measure

__all__ = [
    "ALL_CONTRACTS",
    "DEFAULT_PRICE_BOUNDS",
    "NoisySum",
    "is_vwap_pair",
    "long_term_share_error",
    "ratio_error",
    "statistic_error",
    "vwap_cells",
    "vwap_figures",
    "vwap_queries",
]

ALL_CONTRACTS = "all"
_DRAWS = 400
_SEED = 20240601
_MAX_BOUND = 1e9  # protocols.Bounds upper limit

#: Default clip of a record's price, USD per tonne of contained element: about twice recent
#: public price levels (orders of magnitude, not official figures). A record's value is
#: clipped to ``price bound x quantity bound`` USD (at most 1e9, the protocol's limit).
DEFAULT_PRICE_BOUNDS: dict[Commodity, float] = {
    Commodity.COBALT: 100_000.0,
    Commodity.LITHIUM: 400_000.0,
    Commodity.NATURAL_GRAPHITE: 5_000.0,
    Commodity.NICKEL: 50_000.0,
    Commodity.RARE_EARTHS: 200_000.0,
    Commodity.TELLURIUM: 200_000.0,
    Commodity.COPPER: 20_000.0,
    Commodity.MANGANESE: 10_000.0,
}


@dataclass(frozen=True)
class NoisySum:
    """A pooled sum and the Laplace scales of its noise terms."""

    value: float
    scales: tuple[float, ...]

    @classmethod
    def of(cls, pooled: PooledCell) -> NoisySum:
        """The sum of a published pooled cell."""
        return cls(pooled.value or 0.0, tuple(pooled.noise_scales))

    def __add__(self, other: NoisySum) -> NoisySum:
        return NoisySum(self.value + other.value, self.scales + other.scales)

    def draws(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` simulated values of the sum at its estimate."""
        out = np.full(n, self.value)
        for b in self.scales:
            if b > 0:
                out += rng.laplace(0.0, b, size=n)
        return out


def ratio_error(numerator: NoisySum, denominator: NoisySum, *, draws: int = _DRAWS,
                seed: int = _SEED) -> tuple[float | None, float | None, float | None]:
    """``(ratio, std, ci95)`` of ``numerator / denominator`` (``None`` when undefined).

    The ratio is undefined when the noisy denominator is not positive. ``std`` is the root
    mean square and ``ci95`` the 95% quantile of the simulated absolute error; draws whose
    denominator is not positive count as infinite errors (so a bar is ``None`` when more
    than 5% of them are).
    """
    return statistic_error(lambda v: v[0] / v[1], [numerator, denominator],
                           valid=lambda v: v[1] > 0, draws=draws, seed=seed)


def statistic_error(
    statistic: Callable[[Sequence[np.ndarray]], np.ndarray],
    sums: Sequence[NoisySum], *, valid: Callable[[Sequence[np.ndarray]], np.ndarray],
    draws: int = _DRAWS, seed: int = _SEED,
) -> tuple[float | None, float | None, float | None]:
    """``(estimate, std, ci95)`` of a statistic of noisy sums, by parametric bootstrap.

    ``statistic`` and ``valid`` take one array per sum (vectorised over draws).
    """
    point = [np.array([s.value]) for s in sums]
    if not bool(valid(point)[0]):
        return None, None, None
    estimate = float(statistic(point)[0])
    rng = np.random.default_rng(seed)
    simulated = [s.draws(rng, draws) for s in sums]
    ok = valid(simulated)
    err = np.full(draws, np.inf)
    err[ok] = np.abs(statistic([a[ok] for a in simulated]) - estimate)
    if np.mean(~ok) > 0.05:
        return estimate, None, None
    finite = err[np.isfinite(err)]
    std = float(np.sqrt(np.mean(finite**2)))
    return estimate, std, float(np.quantile(err, 0.95))


def vwap_queries(*, commodity: Commodity, periods: Sequence[str], epsilon: float,
                 price_bound: float, quantity_bound: float, min_contributors: int = 3,
                 purpose: str = "pooled volume-weighted price") -> tuple[AggregateQuery,
                                                                         AggregateQuery]:
    """The (value, quantity) sum queries of a VWAP by contract type x period.

    Half the epsilon each. The value query clips a record's ``price x quantity`` and bounds a
    unit-year's total to ``min(price_bound x quantity_bound, 1e9)`` USD; the quantity query
    bounds priced tonnes to ``quantity_bound``.
    """
    value_bound = min(price_bound * quantity_bound, _MAX_BOUND)
    common = {
        "kind": "sum", "commodities": [commodity], "flows": [Flow.PRICE],
        "periods": list(periods), "group_by": ["contract_type", "period"],
        "epsilon": epsilon / 2, "min_contributors": min_contributors, "purpose": purpose,
    }
    value = AggregateQuery.model_validate({
        **common, "query_id": uuid.uuid4().hex, "measure": Measure.VALUE,
        "bounds": Bounds(record_clip=value_bound, unit_sum_bound=value_bound)})
    quantity = AggregateQuery.model_validate({
        **common, "query_id": uuid.uuid4().hex, "measure": Measure.QUANTITY,
        "bounds": Bounds(record_clip=quantity_bound, unit_sum_bound=quantity_bound)})
    return value, quantity


def is_vwap_pair(value: PooledResult, quantity: PooledResult) -> bool:
    """Whether two results are the value and quantity halves of one VWAP."""
    v, q = value.query, quantity.query
    return (v.measure is Measure.VALUE and q.measure is Measure.QUANTITY
            and list(v.flows) == [Flow.PRICE] == list(q.flows)
            and v.commodities == q.commodities and v.periods == q.periods
            and list(v.group_by) == list(q.group_by) == ["contract_type", "period"])


Cells = dict[tuple[str, str], tuple[CellStatus, NoisySum | None, NoisySum | None]]


def vwap_cells(value: PooledResult, quantity: PooledResult) -> Cells:
    """(status, value sum, quantity sum) per (contract type, period), plus ``all`` types."""
    if not is_vwap_pair(value, quantity):
        raise ValueError("not the value and quantity results of one VWAP (vwap_queries)")
    q_cells = {tuple(c.key): c for c in quantity.cells}
    out: Cells = {}
    for vc in value.cells:
        qc = q_cells[tuple(vc.key)]
        key = (vc.key[0], vc.key[1])
        statuses = {vc.status, qc.status}
        if statuses == {CellStatus.PUBLISHED}:
            out[key] = (CellStatus.PUBLISHED, NoisySum.of(vc), NoisySum.of(qc))
        elif CellStatus.SUPPRESSED in statuses:
            out[key] = (CellStatus.SUPPRESSED, None, None)
        else:
            out[key] = (CellStatus.NOT_COVERED, None, None)
    for period in value.query.periods:
        # A failed query has no cells: every contract type is then not covered.
        parts = [out.get((str(c), period), (CellStatus.NOT_COVERED, None, None))
                 for c in ContractType]
        present = [p for p in parts if p[0] is not CellStatus.NOT_COVERED]
        if not present:
            out[(ALL_CONTRACTS, period)] = (CellStatus.NOT_COVERED, None, None)
        elif any(p[0] is CellStatus.SUPPRESSED for p in present):
            out[(ALL_CONTRACTS, period)] = (CellStatus.SUPPRESSED, None, None)
        else:
            v = q = NoisySum(0.0, ())
            for _, pv, pq in present:
                assert pv is not None and pq is not None
                v, q = v + pv, q + pq
            out[(ALL_CONTRACTS, period)] = (CellStatus.PUBLISHED, v, q)
    return out


def vwap_figures(value: PooledResult, quantity: PooledResult) -> list[PriceFigure]:
    """The VWAP of every (contract type or ``all``, period), with simulated error bars."""
    figures = []
    for (contract, period), (status, v, q) in sorted(vwap_cells(value, quantity).items()):
        if status is not CellStatus.PUBLISHED or v is None or q is None:
            figures.append(PriceFigure(contract_type=contract, period=period, status=status))
            continue
        price, std, ci95 = ratio_error(NoisySum(max(v.value, 0.0), v.scales), q)
        q_std = float(np.sqrt(sum(2 * b * b for b in q.scales)))
        figures.append(PriceFigure(contract_type=contract, period=period, status=status,
                                   value=price, std=std, ci95=ci95, tonnes=q.value,
                                   tonnes_std=q_std, tonnes_noise_scales=list(q.scales)))
    return figures


def long_term_share_error(long_term: NoisySum, spot: NoisySum, *, draws: int = _DRAWS,
                          seed: int = _SEED) -> tuple[float | None, float | None, float | None]:
    """``(share, std, ci95)`` of long-term contracts in priced tonnes, LT / (LT + spot).

    Noisy sums are clipped at 0 first (a share is in [0, 1]); undefined when both are 0.
    """
    def share(v: Sequence[np.ndarray]) -> np.ndarray:
        lt, sp = np.maximum(v[0], 0.0), np.maximum(v[1], 0.0)
        out: np.ndarray = lt / (lt + sp)
        return out

    return statistic_error(share, [long_term, spot],
                           valid=lambda v: (np.maximum(v[0], 0) + np.maximum(v[1], 0)) > 0,
                           draws=draws, seed=seed)
