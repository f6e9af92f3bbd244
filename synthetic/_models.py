"""The two DP models: a Gaussian copula (DPCopula) and a tree of marginals (MST).

Both read integer codes (rows x columns, see :class:`synthetic._domain.PublicDomain`) of a
dataset in which every unit-year has at most ``k`` rows, and release only through an
:class:`~synthetic._mechanisms.Accountant`. Everything after a measurement (clamping,
thresholding, normalising, projecting, sampling) is post-processing of released values.

Sensitivities (neighbouring datasets differ by the <= k rows of one unit-year):

* a one-way histogram of a column: every row adds 1 to exactly one cell, so the change is a
  non-negative vector summing to <= k: L1 <= k and L2 <= k;
* a two-way histogram of a column pair: the same, L1 <= k and L2 <= k;
* the copula's sums of normal-score products ``S = sum_rows (z z^T)[i <= j]``: every row's
  score vector ``z`` is clipped to L2 norm ``R``, so its products have L2 norm
  ``<= ||z||^2 <= R^2`` and L1 norm ``<= (d + 1) R^2 / 2``; k rows at most k times that;
* MST's selection score of a pair ``||M_ij - P_ij||_1`` (``P_ij`` from released values
  only): changes by ``<= k`` (L-infinity over the candidate pairs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from synthetic._mechanisms import Accountant

__all__ = ["CopulaModel", "TreeModel", "fit_copula", "fit_mst"]


def _noise_std(acct: Accountant) -> float:
    """Standard deviation of the last measurement's noise (Laplace sqrt(2) b, Gaussian s)."""
    charge = acct.charges[-1]
    return charge.scale * (math.sqrt(2.0) if acct.regime == "pure" else 1.0)


def _clean(noisy: np.ndarray, std: float) -> np.ndarray:
    """Noisy counts -> probabilities: clamp at 0, drop cells below the noise level.

    The threshold ``std * sqrt(2 ln K)`` is about the largest of K pure-noise draws, so few
    empty cells survive; if nothing does, clamping alone is used, then the uniform.
    """
    counts = np.maximum(noisy.astype(np.float64), 0.0)
    size = max(counts.size, 2)
    kept = np.where(counts >= std * math.sqrt(2.0 * math.log(size)), counts, 0.0)
    if kept.sum() > 0:
        return np.asarray(kept / kept.sum(), dtype=np.float64)
    if counts.sum() > 0:
        return np.asarray(counts / counts.sum(), dtype=np.float64)
    return np.full(counts.size, 1.0 / counts.size)


def _marginals(codes: np.ndarray, sizes: Sequence[int], names: Sequence[str],
               acct: Accountant, *, k: int, budget: float) -> tuple[list[np.ndarray], float]:
    """DP one-way marginals of every column (``budget / d`` each) and a noisy row count."""
    probs, totals = [], []
    for j, (size, name) in enumerate(zip(sizes, names, strict=True)):
        counts = np.bincount(codes[:, j], minlength=size)
        noisy = acct.counts(f"marginal:{name}", counts, sensitivity=k, budget=budget / len(sizes))
        probs.append(_clean(noisy, _noise_std(acct)))
        totals.append(float(noisy.sum()))
    return probs, max(1.0, float(np.median(totals)))


def _draw(probs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(probs)
    return np.asarray(np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"),
                                 probs.size - 1), dtype=np.int64)


@dataclass(frozen=True)
class CopulaModel:
    """A Gaussian copula over DP marginals: per column the category order and CDF, and the
    correlation matrix of the normal scores."""

    marginals: tuple[np.ndarray, ...]
    orders: tuple[np.ndarray, ...]  # category codes from lowest to highest score
    correlation: np.ndarray
    score_norm_bound: float
    estimated_rows: float = 1.0  # noisy number of (bounded) training rows, from the marginals

    def sample_codes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows of codes: Gaussian draws with the correlation, through each CDF."""
        d = len(self.marginals)
        chol = np.linalg.cholesky(self.correlation)
        u = ndtr(rng.standard_normal((n, d)) @ chol.T)
        out = np.empty((n, d), dtype=np.int64)
        for j in range(d):
            cdf = np.cumsum(self.marginals[j][self.orders[j]])
            rank = np.minimum(np.searchsorted(cdf, u[:, j] * cdf[-1], side="right"),
                              cdf.size - 1)
            out[:, j] = self.orders[j][rank]
        return out


def _score_tables(marginals: Sequence[np.ndarray], ordered: Sequence[bool]) -> tuple[
    list[np.ndarray], list[np.ndarray]
]:
    """Per column: category order (natural, or by released frequency) and each code's
    normal score at the middle of its CDF interval."""
    orders, tables = [], []
    for probs, natural in zip(marginals, ordered, strict=True):
        order = (np.arange(probs.size) if natural
                 else np.argsort(-probs, kind="stable"))
        cdf = np.cumsum(probs[order])
        mid = np.clip(cdf - probs[order] / 2.0, 1e-6, 1 - 1e-6)
        table = np.empty(probs.size)
        table[order] = ndtri(mid)
        orders.append(order)
        tables.append(table)
    return orders, tables


def _nearest_correlation(matrix: np.ndarray) -> np.ndarray:
    """Symmetric, positive-definite, unit diagonal: eigenvalues clipped, then rescaled."""
    sym = (matrix + matrix.T) / 2.0
    values, vectors = np.linalg.eigh(sym)
    fixed = (vectors * np.maximum(values, 1e-3)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    out = fixed / np.outer(scale, scale)
    np.fill_diagonal(out, 1.0)
    return np.asarray(out, dtype=np.float64)


def copula_product_sums(codes: np.ndarray, tables: Sequence[np.ndarray],
                        bound: float) -> np.ndarray:
    """``sum_rows (z z^T)[i <= j]`` of the clipped normal scores (the vector that is noised)."""
    z = np.column_stack([tables[j][codes[:, j]] for j in range(codes.shape[1])])
    norms = np.linalg.norm(z, axis=1)
    z *= np.minimum(1.0, bound / np.maximum(norms, 1e-300))[:, None]
    upper = np.triu_indices(codes.shape[1])
    return np.asarray((z.T @ z)[upper], dtype=np.float64)


def copula_sensitivity(regime: str, *, k: int, d: int, bound: float) -> float:
    """Sensitivity of :func:`copula_product_sums` for one unit-year of <= k rows."""
    if regime == "pure":
        return k * bound**2 * (d + 1) / 2.0
    return k * bound**2


def fit_copula(codes: np.ndarray, *, sizes: Sequence[int], names: Sequence[str],
               ordered: Sequence[bool], acct: Accountant, k: int,
               marginal_fraction: float) -> CopulaModel:
    """DPCopula: DP marginals (``marginal_fraction`` of the budget), then DP score products.

    Normal scores use the *released* marginals only, so the score of a row depends on that
    row alone and the product sums have the sensitivity of :func:`copula_sensitivity`.
    """
    d = codes.shape[1]
    marginals, estimated_rows = _marginals(codes, sizes, names, acct, k=k,
                                           budget=acct.total * marginal_fraction)
    orders, tables = _score_tables(marginals, ordered)
    bound = math.sqrt(2.0 * d)
    sums = copula_product_sums(codes, tables, bound)
    noisy = acct.reals("correlation", sums,
                       sensitivity=copula_sensitivity(acct.regime, k=k, d=d, bound=bound),
                       budget=acct.total - acct.spent)
    full = np.zeros((d, d))
    full[np.triu_indices(d)] = noisy
    full = np.triu(full) + np.triu(full, 1).T
    diag = np.diag(full).copy()
    valid = diag > 0
    denom = np.sqrt(np.outer(np.where(valid, diag, 1.0), np.where(valid, diag, 1.0)))
    corr = np.where(np.outer(valid, valid), full / denom, 0.0)
    np.fill_diagonal(corr, 1.0)
    corr = _nearest_correlation(np.clip(corr, -1.0, 1.0))
    return CopulaModel(tuple(marginals), tuple(orders), corr, bound, estimated_rows)


@dataclass(frozen=True)
class TreeModel:
    """MST's model: a tree of DP two-way marginals over DP one-way marginals.

    ``edges`` are (parent, child, conditional table parent x child) in sampling order from
    ``root``; a parent value without released mass uses the child's one-way marginal.
    """

    marginals: tuple[np.ndarray, ...]
    root: int
    edges: tuple[tuple[int, int, np.ndarray], ...]
    selected: tuple[tuple[int, int], ...]
    estimated_rows: float = 1.0  # noisy number of (bounded) training rows, from the marginals

    def sample_codes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows: the root from its marginal, then each child given its parent."""
        out = np.empty((n, len(self.marginals)), dtype=np.int64)
        out[:, self.root] = _draw(self.marginals[self.root], n, rng)
        for parent, child, table in self.edges:
            values = out[:, parent]
            u = rng.random(n)
            result = np.empty(n, dtype=np.int64)
            for v in np.unique(values):
                rows = np.flatnonzero(values == v)
                cdf = np.cumsum(table[v])
                result[rows] = np.minimum(np.searchsorted(cdf, u[rows] * cdf[-1], side="right"),
                                          cdf.size - 1)
            out[:, child] = result
        return out


def _pair_counts(codes: np.ndarray, i: int, j: int, sizes: Sequence[int]) -> np.ndarray:
    flat = codes[:, i] * sizes[j] + codes[:, j]
    return np.bincount(flat, minlength=sizes[i] * sizes[j]).astype(np.float64)


def fit_mst(codes: np.ndarray, *, sizes: Sequence[int], names: Sequence[str],
            acct: Accountant, k: int, root: int) -> TreeModel:
    """MST (McKenna, Miklau & Sheldon 2021), with a tree model instead of Private-PGM.

    A third of the budget measures every one-way marginal; a third selects a maximum
    spanning tree (``d - 1`` rounds of report-noisy-max over the pairs joining two
    components, scored by ``||M_ij - n p_i p_j^T||_1`` against the released independence
    model); a third measures the ``d - 1`` selected two-way marginals. The model is the
    tree itself: conditionals ``P(child | parent)`` from each noisy two-way table.
    """
    d = codes.shape[1]
    third = acct.total / 3.0
    marginals, total = _marginals(codes, sizes, names, acct, k=k, budget=third)
    component = list(range(d))

    def find(x: int) -> int:
        while component[x] != x:
            component[x] = component[component[x]]
            x = component[x]
        return x

    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
    scores = {
        (i, j): float(np.abs(_pair_counts(codes, i, j, sizes)
                             - total * np.outer(marginals[i], marginals[j]).ravel()).sum())
        for i, j in pairs
    }
    selected: list[tuple[int, int]] = []
    for r in range(d - 1):
        candidates = [p for p in pairs if find(p[0]) != find(p[1])]
        choice = acct.argmax(f"select:{r}", np.array([scores[p] for p in candidates]),
                             sensitivity=k, budget=third / (d - 1))
        i, j = candidates[choice]
        component[find(i)] = find(j)
        selected.append((i, j))
    tables: dict[tuple[int, int], np.ndarray] = {}
    for n_edge, (i, j) in enumerate(selected):
        counts = _pair_counts(codes, i, j, sizes).astype(np.int64)
        budget = (acct.total - acct.spent) / (d - 1 - n_edge)
        noisy = acct.counts(f"pair:{names[i]}x{names[j]}", counts, sensitivity=k,
                            budget=budget)
        tables[(i, j)] = _clean(noisy, _noise_std(acct)).reshape(sizes[i], sizes[j])
    edges: list[tuple[int, int, np.ndarray]] = []
    seen, frontier = {root}, [root]
    while frontier:
        node = frontier.pop(0)
        for (i, j), joint in tables.items():
            if node not in (i, j):
                continue
            other = j if node == i else i
            if other in seen:
                continue
            table = joint if node == i else joint.T
            mass = table.sum(axis=1, keepdims=True)
            cond = np.where(mass > 0, table / np.where(mass > 0, mass, 1.0),
                            marginals[other][None, :])
            edges.append((node, other, cond))
            seen.add(other)
            frontier.append(other)
    return TreeModel(tuple(marginals), root, tuple(edges), tuple(selected), total)
