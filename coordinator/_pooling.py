"""Combining the nodes' DP answers into pooled cells (post-processing: no privacy cost).

* A node *contributes* to a cell when its declared coverage meets the cell
  (:meth:`protocols.NodeAnswer.contributes`); only contributors' figures are added, so cells
  carry no noise from companies that do not report on them.
* A cell with no contributor is ``not_covered``; one with fewer contributing companies than
  ``query.min_contributors`` (at least 3) is ``suppressed`` and its value withheld.
* Error bars come from the known noise: each contributor's figure carries independent Laplace
  noise of its stated scale, so the pooled sum's standard deviation is
  ``sqrt(sum 2 b_i^2)`` and its 95% interval is the quantile of the sum of Laplace variables
  (:func:`protocols.laplace_interval_halfwidth`). A mean's error bar uses the delta method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coordinator._models import CellStatus, PooledCell
from protocols import AggregateQuery, NodeAnswer, QueryKind, laplace_interval_halfwidth

__all__ = ["pool_answers", "sum_error_bar"]


def sum_error_bar(scales: Sequence[float]) -> tuple[float, float]:
    """(std, 95% half-width) of a sum of independent Laplace noises with these scales."""
    std = math.sqrt(sum(2.0 * b * b for b in scales))
    return std, laplace_interval_halfwidth(scales)


def _pooled_mean(sums: list[float], counts: list[float], sum_scales: list[float],
                 count_scales: list[float]) -> tuple[float | None, float | None]:
    total, n = sum(sums), sum(counts)
    if n < 1:
        return None, None
    var_s = sum(2 * b * b for b in sum_scales)
    var_n = sum(2 * b * b for b in count_scales)
    mean = total / n
    return mean, math.sqrt(var_s / n**2 + mean**2 * var_n / n**2)


def pool_answers(query: AggregateQuery, answers: Sequence[NodeAnswer]) -> list[PooledCell]:
    """Pool verified answers to ``query`` cell by cell (answers in any order)."""
    cells: list[PooledCell] = []
    for index, key in enumerate(query.public_keys()):
        contributors = [a for a in answers if a.contributes(query, key)]
        if not contributors:
            cells.append(PooledCell(key=list(key), status=CellStatus.NOT_COVERED))
            continue
        if len(contributors) < query.min_contributors:
            cells.append(PooledCell(key=list(key), status=CellStatus.SUPPRESSED))
            continue
        sums = [a.sums[index] if a.sums is not None else 0.0 for a in contributors]
        counts = [a.counts[index] if a.counts is not None else 0.0 for a in contributors]
        if query.kind is QueryKind.MEAN:
            sum_scales = [a.sum_scale or 0.0 for a in contributors]
            count_scales = [a.count_scale or 0.0 for a in contributors]
            mean, std = _pooled_mean(sums, counts, sum_scales, count_scales)
            cells.append(PooledCell(
                key=list(key), status=CellStatus.PUBLISHED, value=mean, std=std,
                ci95=None if std is None else 1.96 * std,
            ))
            continue
        if query.kind is QueryKind.SUM:
            values, scales = sums, [a.sum_scale or 0.0 for a in contributors]
        else:
            values, scales = counts, [a.count_scale or 0.0 for a in contributors]
        std, ci95 = sum_error_bar(scales)
        cells.append(PooledCell(key=list(key), status=CellStatus.PUBLISHED, value=sum(values),
                                std=std, ci95=ci95, noise_scales=scales))
    return cells
