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


def _components(n_leaves: int, measurements: Sequence[Measurement]
                ) -> list[tuple[list[int], list[int]]]:
    """(leaves, measurement indices) of each connected component."""
    parent = list(range(n_leaves))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for m in measurements:
        for leaf in m.leaves[1:]:
            ra, rb = find(m.leaves[0]), find(leaf)
            if ra != rb:
                parent[rb] = ra
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for leaf in range(n_leaves):
        groups.setdefault(find(leaf), ([], []))[0].append(leaf)
    for i, m in enumerate(measurements):
        if m.leaves:
            groups[find(m.leaves[0])][1].append(i)
    return list(groups.values())


class _Component:
    """The weighted problem of one component, with its unconstrained WLS map."""

    def __init__(self, a: np.ndarray, variances: np.ndarray) -> None:
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

    def solve(self, y: np.ndarray) -> np.ndarray:
        """Non-negative WLS solutions for one (``y`` 1-d) or many (2-d, draws x m) vectors."""
        single = y.ndim == 1
        ys = y[None, :] if single else y
        x = ys @ self.linear_map.T
        if self.simple:
            x = np.maximum(x, 0.0)
        else:
            bad = np.nonzero(np.any(x < 0.0, axis=1))[0]
            zeros = np.zeros(self.ridge.shape[0])
            for r in bad:
                b = np.concatenate([ys[r] * self.w, zeros])
                fit = lsq_linear(np.vstack([self.aw, self.ridge]), b, bounds=(0.0, np.inf),
                                 method="bvls")
                x[r] = np.maximum(fit.x, 0.0)
        out: np.ndarray = x[0] if single else x
        return out


def _prepared(n_leaves: int, measurements: Sequence[Measurement]
              ) -> list[tuple[list[int], list[int], _Component]]:
    a, _ = _design(n_leaves, measurements)
    variances = np.array([m.variance for m in measurements])
    out = []
    for leaves, rows in _components(n_leaves, measurements):
        if not rows:
            continue
        out.append((leaves, rows, _Component(a[np.ix_(rows, leaves)], variances[rows])))
    return out


def reconcile(*, n_leaves: int, measurements: Sequence[Measurement]) -> np.ndarray:
    """Non-negative weighted least-squares leaves consistent with every measurement.

    Leaves that no measurement touches come out as 0 (callers do not publish them).
    """
    _, y = _design(n_leaves, measurements)
    x = np.zeros(n_leaves)
    for leaves, rows, comp in _prepared(n_leaves, measurements):
        x[leaves] = comp.solve(y[rows])
    return x


def simulate_errors(*, n_leaves: int, measurements: Sequence[Measurement], estimate: np.ndarray,
                    outputs: np.ndarray, draws: int = 400, seed: int = 20240601) -> ErrorBars:
    """Error bars of ``outputs @ leaves`` after post-processing, by parametric bootstrap.

    ``outputs`` is the (figures x leaves) matrix of the published figures. The seed is fixed:
    error bars are a deterministic function of public parameters.
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
    for leaves, rows, comp in _prepared(n_leaves, measurements):
        xs[:, leaves] = comp.solve(ys[:, rows])
    err = xs @ outputs.T - (outputs @ estimate)[None, :]
    return ErrorBars(std=np.sqrt(np.mean(err**2, axis=0)),
                     ci95=np.quantile(np.abs(err), 0.95, axis=0), draws=draws)
