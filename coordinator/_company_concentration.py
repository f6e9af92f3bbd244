"""Company concentration (HHI by company) from two secure-aggregation rounds.

Each node is one company. A secure query of statistic ``sum`` gives, per cell, the pooled
``S1 = sum_i x_i`` of the companies' bounded cell totals; one of statistic
``sum_of_squares`` over the same cells, nodes and clip gives ``S2 = sum_i x_i^2``. The HHI of
the companies' shares is ``S2 / S1^2`` (:func:`coordinator.company_hhi`), computed from
these two noisy pooled sums only: no company's value is ever seen, by the coordinator or
anyone else. The top-3 company share is **not** computed: it needs the three largest
values, which no sum reveals (docs/indicators.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator._indicators import CompanyHHI, company_hhi
from coordinator._models import CellStatus
from coordinator._secure_rounds import SecureQueryStatus

__all__ = ["CompanyConcentration", "company_concentration"]

#: Query fields that may differ between the two rounds (each needs its own id and budget).
_MAY_DIFFER = {"query_id", "purpose", "epsilon"}


@dataclass(frozen=True)
class CompanyConcentration:
    """One cell's company HHI (0..1 scale), or why there is none."""

    key: list[str]
    hhi: CompanyHHI | None
    reason: str | None = None


def company_concentration(sums: SecureQueryStatus, squares: SecureQueryStatus, *,
                          draws: int = 4000, seed: int = 20261122
                          ) -> list[CompanyConcentration]:
    """Per cell, the company HHI from a completed ``sum`` and ``sum_of_squares`` round.

    Both rounds must be over the same cells, bounds and clip, and have summed the same nodes
    (else ``S1`` and ``S2`` are over different companies): :class:`ValueError` otherwise. A
    cell suppressed in either round (too few companies, dominance) has no HHI, nor has one
    whose noisy total is not positive. ``companies`` (the clamp's ``1/n``) is the number of
    summed nodes.
    """
    if sums.statistic != "sum" or squares.statistic != "sum_of_squares":
        raise ValueError("company concentration needs a 'sum' round and a 'sum_of_squares' "
                         f"round, not {sums.statistic!r} and {squares.statistic!r}")
    if sums.status != "completed" or squares.status != "completed":
        raise ValueError(f"both rounds must be completed ({sums.status}, {squares.status})")
    if sums.clip is None or sums.clip != squares.clip:
        raise ValueError(f"both rounds must clip a company's cell total alike ({sums.clip}, "
                         f"{squares.clip})")
    same = {k: v for k, v in sums.query.model_dump().items() if k not in _MAY_DIFFER}
    other = {k: v for k, v in squares.query.model_dump().items() if k not in _MAY_DIFFER}
    if same != other:
        differ = sorted(k for k in same if same[k] != other.get(k))
        raise ValueError(f"the two rounds pool different queries (they differ in {differ})")
    if sorted(sums.sum_survivors) != sorted(squares.sum_survivors):
        raise ValueError(f"the two rounds summed different nodes ({sums.sum_survivors} and "
                         f"{squares.sum_survivors})")
    companies = len(sums.sum_survivors)
    out = []
    for s1, s2 in zip(sums.cells, squares.cells, strict=True):
        if s1.status is not CellStatus.PUBLISHED or s2.status is not CellStatus.PUBLISHED:
            reason = s1.reason if s1.status is not CellStatus.PUBLISHED else s2.reason
            out.append(CompanyConcentration(key=s1.key, hhi=None,
                                            reason=f"suppressed: {reason}"))
            continue
        assert s1.value is not None and s2.value is not None
        if s1.value <= 0:
            out.append(CompanyConcentration(key=s1.key, hhi=None,
                                            reason="the noisy total is not positive"))
            continue
        out.append(CompanyConcentration(key=s1.key, hhi=company_hhi(
            total=s1.value, sum_of_squares=s2.value, companies=companies,
            total_std=s1.std or 0.0, sum_of_squares_std=s2.std or 0.0, draws=draws,
            seed=seed)))
    return out
