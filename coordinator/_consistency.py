"""Consistency post-processing of noisy figures (no privacy cost) and its error bars.

Everything here works on plain numpy arrays and public noise parameters; nothing reads data.

**The problem.** The unknowns are the *leaf* cells ``x >= 0`` (country x stage x flow). Every
noisy measurement ``y_i`` (a country cell, or a region or world total when one is measured) is
a known linear function of the leaves, ``y_i = a_i . x + noise_i``, with noise variance
``v_i`` (the sum of ``2 b^2`` over its Laplace terms). Every published figure is a linear
function of the leaves too: a region total is the sum of its countries, the world the sum of
the regions, stock change and apparent consumption are the balance identity applied to the
leaves. We solve

    minimise  sum_i (a_i . x - y_i)^2 / v_i   subject to  x >= 0

(weighted least squares with non-negativity; bounded least squares, ``scipy.optimize.
lsq_linear`` method ``bvls``) and publish ``F x``. This is the *null-space* method for the
equality constraints: parameterising every figure by the leaves makes "children sum to their
parent" and "apparent consumption = production + imports - exports - stock change" hold
*exactly*, by construction, and non-negativity becomes simple bounds. It follows the idea of
the US Census Bureau's TopDown algorithm (Abowd et al., 2022: weighted non-negative least
squares to make noisy hierarchical counts consistent), solved jointly over the hierarchy
rather than level by level, and without TopDown's integer rounding (tonnes are real numbers).

**Kept sums** (``keep_sums``, used by the balance for its world figures): clipping noisy leaves
at 0 only ever raises them, so a sum of many clipped leaves is biased upwards (a world total
of many small countries can end up further from the truth than the raw sum). A kept sum adds
the equality ``sum of its leaves = max(0, its unconstrained WLS value)`` to the bounded
problem: the unconstrained value is unbiased, and the leaves that stay positive give back
the clipped mass in proportion to their noise variance (``x_i = max(0, u_i - mu v_i)`` when
every measurement is on one leaf: solved exactly, vectorised over bootstrap draws; otherwise
the equality is a heavily weighted row of the ``bvls`` problem).

Leaves that no measurement determines (e.g. a suppressed cell under a measured parent) make
a component singular; only then a ridge of relative weight ``1e-9`` picks the smallest such
leaves (identified components are solved without it).

**Speed.** The leaves split into independent components (connected through shared
measurements); each is solved on its own. A component whose unconstrained WLS solution is
non-negative needs no bounded solve, so the simulation applies the component's linear WLS map
to all draws at once and calls ``bvls`` only for draws that hit the bound.

**Error bars** (:func:`simulate_errors`): the error of ``F x_hat`` is simulated by a
parametric bootstrap at the estimate: draw ``y* = A x_hat + noise*`` with the *public* Laplace
scales of every measurement, post-process ``y*`` the same way, and take the spread of
``F x* - F x_hat``. This is computing an error bar from public parameters, not adding noise to
data. It propagates non-negativity (a clipped figure near zero gets an asymmetric, narrower
error distribution) and the variance reduction of the hierarchy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

__all__ = [
    "ErrorBars",
    "Measurement",
    "reconcile",
    "simulate_errors",
    "variance_of_scales",
]

_RIDGE = 1e-9


@dataclass(frozen=True)
class Measurement:
    """One noisy figure: the leaves it sums (with coefficients), its value, its noise scales."""

    leaves: tuple[int, ...]
    value: float
    noise_scales: tuple[float, ...]
    coefficients: tuple[float, ...] | None = None  # default: all 1 (a plain sum)

    @property
    def variance(self) -> float:
        """Variance of the measurement's noise: ``sum 2 b^2``."""
        return variance_of_scales(self.noise_scales)


@dataclass(frozen=True)
class ErrorBars:
    """Simulated errors of the published figures after post-processing."""

    std: np.ndarray  # standard deviation of F x* - F x_hat
    ci95: np.ndarray  # 95% quantile of |F x* - F x_hat|
    draws: int


def variance_of_scales(scales: Sequence[float]) -> float:
    """Variance of a sum of independent Laplace noises of scales ``b``: ``sum 2 b^2``."""
    return float(sum(2.0 * b * b for b in scales))


def _design(n_leaves: int, measurements: Sequence[Measurement]) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((len(measurements), n_leaves))
    y = np.empty(len(measurements))
    for i, m in enumerate(measurements):
        coefs = m.coefficients or (1.0,) * len(m.leaves)
        if len(coefs) != len(m.leaves):
            raise ValueError("a measurement needs one coefficient per leaf")
        for leaf, c in zip(m.leaves, coefs, strict=True):
            if not 0 <= leaf < n_leaves:
                raise ValueError(f"leaf {leaf} is outside 0..{n_leaves - 1}")
            a[i, leaf] += c
        y[i] = m.value
    return a, y


def _components(n_leaves: int, measurements: Sequence[Measurement],
                keep_sums: Sequence[Sequence[int]] = ()
                ) -> list[tuple[list[int], list[int], list[list[int]]]]:
    """(leaves, measurement indices, kept sums) of each connected component; a kept sum
    links its leaves too."""
    parent = list(range(n_leaves))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked = [m.leaves for m in measurements] + [tuple(g) for g in keep_sums]
    for leaves in linked:
        for leaf in leaves[1:]:
            ra, rb = find(leaves[0]), find(leaf)
            if ra != rb:
                parent[rb] = ra
    groups: dict[int, tuple[list[int], list[int], list[list[int]]]] = {}
    for leaf in range(n_leaves):
        groups.setdefault(find(leaf), ([], [], []))[0].append(leaf)
    for i, m in enumerate(measurements):
        if m.leaves:
            groups[find(m.leaves[0])][1].append(i)
    seen: set[int] = set()
    for g in keep_sums:
        if not g:
            continue
        if seen & set(g) or not all(0 <= leaf < n_leaves for leaf in g):
            raise ValueError("kept sums must be disjoint sets of existing leaves")
        seen |= set(g)
        groups[find(g[0])][2].append(list(g))
    return list(groups.values())


class _Component:
    """The weighted problem of one block of leaves, with its unconstrained WLS map.

    ``groups`` (local leaf indices, disjoint) are the sums kept at their unconstrained WLS
    value (clipped at 0) when non-negativity binds (see :func:`reconcile`).
    """

    def __init__(self, a: np.ndarray, variances: np.ndarray,
                 groups: Sequence[Sequence[int]] = ()) -> None:
        if np.any(variances <= 0):
            raise ValueError("every measurement needs a positive noise variance")
        w = 1.0 / np.sqrt(variances)
        self.aw = a * w[:, None]
        self.w = w
        n = a.shape[1]
        scale = float(np.mean(w**2)) if len(w) else 1.0
        identified = np.linalg.matrix_rank(a) == n
        self.ridge = (0.0 if identified else np.sqrt(_RIDGE * scale)) * np.eye(n)
        stacked = np.vstack([self.aw, self.ridge])
        # x = pinv(stacked) @ [w y; 0]: the unconstrained WLS solution as a linear map of y
        self.linear_map = np.linalg.pinv(stacked)[:, : len(w)] * w[None, :]
        self.simple = a.shape[1] == 1  # one leaf: the weighted mean, clipped, is exact
        self.groups = [np.asarray(g, dtype=int) for g in groups if len(g)]
        # every measurement on one leaf: the weighted problem is separable, with leaf i's
        # unconstrained value of variance 1 / sum(w^2) over its measurements
        self.separable = identified and bool(np.all(np.count_nonzero(a, axis=1) <= 1))
        self.leaf_variance = (1.0 / np.maximum(np.sum(self.aw**2, axis=0), 1e-300)
                              if self.separable else None)

    def solve(self, y: np.ndarray) -> np.ndarray:
        """Non-negative WLS solutions for one (``y`` 1-d) or many (2-d, draws x m) vectors."""
        single = y.ndim == 1
        ys = y[None, :] if single else y
        x = ys @ self.linear_map.T
        if self.simple:
            x = np.maximum(x, 0.0)
        elif self.groups and self.separable:
            x = self._water_fill(x)
        else:
            bad = np.nonzero(np.any(x < 0.0, axis=1))[0]
            for r in bad:
                x[r] = self._bounded(ys[r], x[r])
        out: np.ndarray = x[0] if single else x
        return out

    def _bounded(self, y: np.ndarray, unconstrained: np.ndarray) -> np.ndarray:
        """The bounded solve of one vector; kept sums enter as heavily weighted rows."""
        n = self.ridge.shape[0]
        rows, rhs = [self.aw, self.ridge], [y * self.w, np.zeros(n)]
        if self.groups:
            heavy = 1e4 * float(np.max(np.abs(self.aw))) if self.aw.size else 1.0
            for g in self.groups:
                row = np.zeros((1, n))
                row[0, g] = heavy
                rows.append(row)
                rhs.append(np.array([heavy * max(float(unconstrained[g].sum()), 0.0)]))
        fit = lsq_linear(np.vstack(rows), np.concatenate(rhs), bounds=(0.0, np.inf),
                         method="bvls")
        solution: np.ndarray = np.maximum(fit.x, 0.0)
        return solution

    def _water_fill(self, x: np.ndarray) -> np.ndarray:
        """Separable case, exact: in each kept group ``x_i = max(0, u_i - mu v_i)`` with
        ``mu >= 0`` such that the group sums to ``max(0, sum u)``; other leaves clipped."""
        assert self.leaf_variance is not None
        out: np.ndarray = np.maximum(x, 0.0)
        for g in self.groups:
            u, v = x[:, g], self.leaf_variance[g]
            target = np.maximum(u.sum(axis=1), 0.0)
            bad = np.any(u < 0.0, axis=1)
            if not np.any(bad):
                continue
            ub, tb = u[bad], target[bad]
            t = ub / v[None, :]  # leaf i is positive while mu < u_i / v_i
            order = np.argsort(-t, axis=1)
            ts = np.take_along_axis(t, order, axis=1)
            cu = np.cumsum(np.take_along_axis(ub, order, axis=1), axis=1)
            cv = np.cumsum(v[order], axis=1)
            mus = (cu - tb[:, None]) / cv  # mu if the first j leaves (by t) are positive
            k = np.sum(ts > mus, axis=1)  # positive leaves: the largest j with t_j > mu_j
            mu = np.take_along_axis(mus, np.maximum(k - 1, 0)[:, None], axis=1)[:, 0]
            filled = np.maximum(ub - mu[:, None] * v[None, :], 0.0)
            filled[tb <= 0.0] = 0.0
            out[np.ix_(np.nonzero(bad)[0], g)] = filled
        return out


def _prepared(n_leaves: int, measurements: Sequence[Measurement],
              keep_sums: Sequence[Sequence[int]] = ()
              ) -> list[tuple[list[int], list[int], _Component]]:
    a, _ = _design(n_leaves, measurements)
    variances = np.array([m.variance for m in measurements])
    out = []
    for leaves, rows, groups in _components(n_leaves, measurements, keep_sums):
        if not rows:
            continue
        local = {leaf: i for i, leaf in enumerate(leaves)}
        out.append((leaves, rows, _Component(a[np.ix_(rows, leaves)], variances[rows],
                                             [[local[leaf] for leaf in g] for g in groups])))
    return out


def reconcile(*, n_leaves: int, measurements: Sequence[Measurement],
              keep_sums: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """Non-negative weighted least-squares leaves consistent with every measurement.

    ``keep_sums``: disjoint sets of leaves whose sum is kept at its *unconstrained* WLS
    estimate (clipped at 0) when non-negativity binds: the non-negative solution closest to
    the measurements under that equality. Clipping noisy leaves at 0 only ever raises them,
    so a sum of many clipped leaves is biased upwards; keeping the sum removes that bias
    (the leaves that stay positive absorb it in proportion to their noise variance).
    Leaves that no measurement touches come out as 0 (callers do not publish them).
    """
    _, y = _design(n_leaves, measurements)
    x = np.zeros(n_leaves)
    for leaves, rows, comp in _prepared(n_leaves, measurements, keep_sums):
        x[leaves] = comp.solve(y[rows])
    return x


def simulate_errors(*, n_leaves: int, measurements: Sequence[Measurement], estimate: np.ndarray,
                    outputs: np.ndarray, draws: int = 400, seed: int = 20240601,
                    keep_sums: Sequence[Sequence[int]] = ()) -> ErrorBars:
    """Error bars of ``outputs @ leaves`` after post-processing, by parametric bootstrap.

    ``outputs`` is the (figures x leaves) matrix of the published figures; ``keep_sums`` as
    in :func:`reconcile` (the same post-processing). The seed is fixed: error bars are a
    deterministic function of public parameters.
    """
    rng = np.random.default_rng(seed)
    a, _ = _design(n_leaves, measurements)
    center = a @ estimate
    noise = np.zeros((draws, len(measurements)))
    for i, m in enumerate(measurements):
        for b in m.noise_scales:
            if b > 0:
                noise[:, i] += rng.laplace(0.0, b, size=draws)
    ys = center[None, :] + noise
    xs = np.zeros((draws, n_leaves))
    for leaves, rows, comp in _prepared(n_leaves, measurements, keep_sums):
        xs[:, leaves] = comp.solve(ys[:, rows])
    err = xs @ outputs.T - (outputs @ estimate)[None, :]
    return ErrorBars(std=np.sqrt(np.mean(err**2, axis=0)),
                     ci95=np.quantile(np.abs(err), 0.95, axis=0), draws=draws)
