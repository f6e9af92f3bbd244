"""Distributed discrete Gaussian noise for secure aggregation, and its privacy accounting.

Each node adds a *share* of the noise: independent discrete Gaussian noise ``N_Z(0, s^2)``
with ``s = node_sigma``, sampled by OpenDP (``opendp.measurements.make_gaussian`` over
``i64`` vectors; never by NumPy or :mod:`random`). Secure aggregation reveals only the sum
over the ``m`` nodes whose inputs were summed, so the released noise is a sum of ``m``
independent discrete Gaussians. Calibrating ``s^2 = sigma^2 / n_min`` makes that sum's
variance at least ``sigma^2`` whenever ``m >= n_min`` nodes survive: the accuracy of one
trusted curator adding ``N_Z(0, sigma^2)`` once.

Privacy of the released sum (Kairouz, Liu, Steinke, ICML 2021, Theorem 1): for ``s >= 1/2``,
``m`` summed shares, and any change ``Delta`` of the summed integer vector of dimension ``d``
with ``||Delta||_1 <= D1`` and ``||Delta||_2 <= D2``, the release is ``rho``-zCDP with
``rho = epsilon^2 / 2`` and ::

    tau     = 10 * sum_{k=1}^{m-1} exp(-2 pi^2 s^2 k / (k + 1))
    epsilon = min( sqrt(D2^2 / (m s^2) + tau d / 2),  D1 / (sqrt(m) s) + tau d )

(:func:`distributed_gaussian_rho`). For ``m = 1`` this is exactly the discrete Gaussian's
``D2^2 / (2 s^2)``. ``tau`` is negligible for any realistic ``s`` (it is below ``1e-300`` for
``s >= 10``), so the sum is as private as one continuous Gaussian of variance ``m s^2``.

Against collusion: if everyone else (the coordinator and all other nodes) colludes, they can
subtract their own shares and are left with one honest node's value plus its own share
only. That share alone is ``D2^2 / (2 s^2)``-zCDP (:func:`local_share_rho`, OpenDP's own
privacy map), i.e. ``n_min`` times the target ``rho``: weaker, but still a DP guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import opendp.prelude as dp

from protocols._accounting import zcdp_epsilon
from protocols._secagg_errors import NoiseBoundExceededError, SecAggParameterError

__all__ = [
    "NOISE_FAILURE_PROBABILITY",
    "DiscreteGaussianShare",
    "calibrate_node_sigma",
    "discrete_gaussian_share",
    "distributed_gaussian_rho",
    "kls_tau",
    "local_share_rho",
    "noise_tail_bound",
    "zcdp_rho_for_epsilon",
]

dp.enable_features("contrib")

#: Probability, per round, that any node's noise exceeds :func:`noise_tail_bound`.
NOISE_FAILURE_PROBABILITY = 2.0**-40


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise SecAggParameterError(f"{name} must be a positive number, got {value!r}")


def kls_tau(*, node_sigma: float, survivors: int) -> float:
    """``tau = 10 * sum_{k=1}^{m-1} exp(-2 pi^2 s^2 k/(k+1))`` of Kairouz, Liu, Steinke."""
    _check_positive("node_sigma", node_sigma)
    if survivors < 1:
        raise SecAggParameterError(f"survivors must be >= 1, got {survivors}")
    return 10.0 * math.fsum(
        math.exp(-2.0 * math.pi**2 * node_sigma**2 * k / (k + 1)) for k in range(1, survivors)
    )


def distributed_gaussian_rho(
    *,
    l1_sensitivity: float,
    l2_sensitivity: float,
    node_sigma: float,
    survivors: int,
    dimension: int,
) -> float:
    """``rho`` (zCDP) of the sum of ``survivors`` discrete Gaussian shares of parameter
    ``node_sigma`` added to an integer vector of ``dimension`` cells whose L1 and L2
    sensitivities are at most ``l1_sensitivity`` and ``l2_sensitivity`` (module docstring).

    Kairouz, Liu, Steinke (2021), Theorem 1; requires ``node_sigma >= 1/2``.
    """
    _check_positive("l1_sensitivity", l1_sensitivity)
    _check_positive("l2_sensitivity", l2_sensitivity)
    if l2_sensitivity > l1_sensitivity:
        raise SecAggParameterError("the L2 sensitivity cannot exceed the L1 sensitivity")
    if node_sigma < 0.5:
        raise SecAggParameterError(f"node_sigma must be >= 1/2, got {node_sigma}")
    if dimension < 1:
        raise SecAggParameterError(f"dimension must be >= 1, got {dimension}")
    tau = kls_tau(node_sigma=node_sigma, survivors=survivors)
    m = survivors
    by_l2 = math.sqrt(l2_sensitivity**2 / (m * node_sigma**2) + tau * dimension / 2.0)
    by_l1 = l1_sensitivity / (math.sqrt(m) * node_sigma) + tau * dimension
    epsilon = min(by_l2, by_l1)
    return epsilon**2 / 2.0


def calibrate_node_sigma(
    *,
    rho: float,
    l1_sensitivity: float,
    l2_sensitivity: float,
    min_survivors: int,
    dimension: int,
) -> float:
    """The smallest share parameter ``s`` (up to 0.1%) for which the sum of ``min_survivors``
    shares is ``rho``-zCDP by :func:`distributed_gaussian_rho`.

    Starts from ``s = D2 / sqrt(2 rho n_min)`` (where ``tau`` is negligible this is exact)
    and widens it until the bound holds. More survivors only add noise, so the round is at
    least ``rho``-zCDP whenever ``min_survivors`` or more inputs are summed.
    """
    _check_positive("rho", rho)
    _check_positive("l2_sensitivity", l2_sensitivity)
    if min_survivors < 1:
        raise SecAggParameterError(f"min_survivors must be >= 1, got {min_survivors}")
    sigma = max(0.5, l2_sensitivity / math.sqrt(2.0 * rho * min_survivors))
    for _ in range(10_000):
        achieved = distributed_gaussian_rho(
            l1_sensitivity=l1_sensitivity,
            l2_sensitivity=l2_sensitivity,
            node_sigma=sigma,
            survivors=min_survivors,
            dimension=dimension,
        )
        if achieved <= rho:
            return sigma
        sigma *= 1.001
    raise SecAggParameterError(  # pragma: no cover - rho decreases to 0 as sigma grows
        f"no node_sigma found for rho {rho}"
    )


def zcdp_rho_for_epsilon(*, epsilon: float, delta: float) -> float:
    """The largest ``rho`` (to 1e-12) whose ``rho``-zCDP implies ``(epsilon, delta)``-DP.

    Inverts :func:`protocols.zcdp_epsilon` (Canonne, Kamath, Steinke 2020, the conversion the
    node's accounting uses) by bisection. For ``epsilon = 1``, ``delta = 1e-6`` it is about
    0.0244 (the classic ``rho + 2 sqrt(rho ln(1/delta))`` would give 0.0175).
    """
    _check_positive("epsilon", epsilon)
    if not 0 < delta < 1:
        raise SecAggParameterError(f"delta must be in (0, 1), got {delta}")
    low, high = 0.0, epsilon  # zcdp_epsilon(rho) >= rho, so rho <= epsilon
    while high - low > 1e-12:
        middle = (low + high) / 2
        if zcdp_epsilon(middle, delta) <= epsilon:
            low = middle
        else:
            high = middle
    return low


def noise_tail_bound(
    *,
    node_sigma: float,
    nodes: int,
    cells: int,
    failure_probability: float = NOISE_FAILURE_PROBABILITY,
) -> int:
    """An integer ``T`` such that all ``nodes * cells`` noise draws lie in ``[-T, T]`` except
    with probability below ``failure_probability``.

    The discrete Gaussian ``N_Z(0, s^2)`` is ``s``-sub-Gaussian (Canonne, Kamath, Steinke,
    NeurIPS 2020), so ``P(|X| > t) <= 2 exp(-t^2 / (2 s^2))``; a union bound over the
    ``nodes * cells`` draws gives ``T = ceil(s sqrt(2 ln(2 nodes cells / p)))``.
    """
    _check_positive("node_sigma", node_sigma)
    if nodes < 1 or cells < 1:
        raise SecAggParameterError("nodes and cells must be >= 1")
    if not 0 < failure_probability < 1:
        raise SecAggParameterError("failure_probability must be in (0, 1)")
    draws = nodes * cells
    return math.ceil(node_sigma * math.sqrt(2.0 * math.log(2.0 * draws / failure_probability)))


def local_share_rho(*, l2_sensitivity: int, node_sigma: float) -> float:
    """``rho`` of one node's own share if everybody else colludes: ``D2^2 / (2 s^2)``.

    Taken from OpenDP's privacy map of the very measurement the node samples with.
    """
    share = discrete_gaussian_share(node_sigma=node_sigma)
    return share.rho_at(l2_sensitivity)


@dataclass(frozen=True)
class DiscreteGaussianShare:
    """One node's noise share: ``N_Z(0, node_sigma^2)`` added to every cell, by OpenDP.

    Privacy (this share alone): ``rho = D2^2 / (2 node_sigma^2)``-zCDP at L2 sensitivity
    ``D2`` (OpenDP's map, :meth:`rho_at`). Summed with the shares of other honest nodes it is
    :func:`distributed_gaussian_rho`. Build it with :func:`discrete_gaussian_share`.
    """

    node_sigma: float
    _measurement: Any = field(repr=False, compare=False)

    def rho_at(self, l2_sensitivity: int) -> float:
        """OpenDP's zCDP ``rho`` of this share at integer L2 sensitivity ``l2_sensitivity``."""
        return float(self._measurement.map(l2_sensitivity))

    def add_noise(self, values: Sequence[int], *, tail_bound: int | None = None) -> list[int]:
        """``values`` plus independent ``N_Z(0, node_sigma^2)`` noise on every entry.

        With ``tail_bound``, raise :class:`NoiseBoundExceededError` if any noise draw lies
        outside ``[-tail_bound, tail_bound]`` (the overflow argument of the encoding relies
        on it; it happens with the probability :func:`noise_tail_bound` was given).
        """
        if not values:
            return []
        noisy = [int(v) for v in self._measurement([int(v) for v in values])]
        if tail_bound is not None:
            worst = max(abs(n - int(v)) for n, v in zip(noisy, values, strict=True))
            if worst > tail_bound:
                raise NoiseBoundExceededError(
                    f"a noise draw of magnitude {worst} exceeds the tail bound {tail_bound}"
                )
        return noisy


def discrete_gaussian_share(*, node_sigma: float) -> DiscreteGaussianShare:
    """OpenDP's discrete Gaussian on ``i64`` vectors with parameter ``node_sigma``.

    ``rho``-zCDP with ``rho = D2^2 / (2 node_sigma^2)`` at L2 sensitivity ``D2``.
    """
    _check_positive("node_sigma", node_sigma)
    measurement = dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64"), scale=node_sigma
    )
    return DiscreteGaussianShare(node_sigma, measurement)
