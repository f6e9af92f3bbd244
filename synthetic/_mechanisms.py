"""OpenDP measurements behind every synthesizer, and the accounting of what they spend.

Every noisy value comes from an OpenDP measurement; nothing here samples noise itself.

* Histograms (integer counts): ``opendp.measurements.make_laplace`` (discrete Laplace, pure
  DP, L1 sensitivity) or ``make_gaussian`` (discrete Gaussian, zCDP, L2 sensitivity) over
  ``vector_domain(atom_domain(T=int))``.
* Real vectors (sums of normal-score products): the same two constructors over
  ``vector_domain(atom_domain(T=float, nan=False))``; OpenDP samples them exactly on a fine
  lattice, without the floating-point weakness of textbook Laplace noise.
* Selection: ``make_noisy_max`` (report-noisy-max: Gumbel noise is the exponential
  mechanism; under zCDP its map gives rho) over a float score vector with ``linf_distance``.

Each measurement is *calibrated*: its scale is the smallest found for which OpenDP's own
privacy map at the stated sensitivity certifies at most the loss allotted to it; the loss
recorded is that certified value.

Composition. Under ``delta == 0`` every measurement is pure ``epsilon_i``-DP and the
release is ``sum(epsilon_i)``-DP (basic sequential composition; adaptive choices, as in
MST's selection, are covered). Under ``delta > 0`` every measurement is ``rho_i``-zCDP, the
release is ``rho = sum(rho_i)``-zCDP (Bun & Steinke 2016, Lemma 2.3, adaptive), and the
``(epsilon, delta)`` stated is OpenDP's ``make_zCDP_to_approxDP`` + ``make_fix_delta``
conversion of ``rho`` at ``delta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import opendp.prelude as dp

from synthetic._errors import SyntheticPrivacyError

__all__ = ["MechanismCharge", "PrivacySpent", "budget_for", "zcdp_to_epsilon"]

dp.enable_features("contrib")

Regime = Literal["pure", "zcdp"]


@dataclass(frozen=True)
class MechanismCharge:
    """One OpenDP measurement of a fit: what it released and what it cost.

    ``loss`` is epsilon (pure DP) or rho (zCDP), as certified by OpenDP's privacy map at
    ``sensitivity`` (L1 for Laplace, L2 for Gaussian, L-infinity for noisy max).
    """

    name: str
    mechanism: str
    sensitivity: float
    scale: float
    loss: float


@dataclass(frozen=True)
class PrivacySpent:
    """The privacy a fitted synthesizer spent, per unit-year (see docs/synthetic.md).

    ``epsilon`` and ``delta`` are the guarantee to charge to the node's budget, in every
    year of ``years``. ``rho`` is the zCDP total when ``delta > 0`` (else ``None``).
    ``charges`` lists every measurement; ``rows_per_unit`` is the contribution bound they
    assume.
    """

    epsilon: float
    delta: float
    rho: float | None
    charges: tuple[MechanismCharge, ...]
    rows_per_unit: int
    years: tuple[int, ...]
    privacy_unit: str

    def as_dict(self) -> dict[str, Any]:
        """Plain values (no data) for a release's metadata."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "rows_per_unit": self.rows_per_unit,
            "years": list(self.years),
            "privacy_unit": self.privacy_unit,
            "mechanisms": [
                {"name": c.name, "mechanism": c.mechanism, "sensitivity": c.sensitivity,
                 "scale": c.scale, "loss": c.loss}
                for c in self.charges
            ],
        }


def _zcdp_mirror(rho: float) -> Any:
    """A Gaussian measurement that is exactly ``rho``-zCDP at distance 1.

    The zCDP -> (epsilon, delta) conversion depends on rho alone; this lets OpenDP's
    conversion combinators compute it for the total rho of a whole fit.
    """
    return dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float),
        scale=1.0 / math.sqrt(2.0 * rho),
    )


def zcdp_to_epsilon(rho: float, delta: float) -> float:
    """OpenDP's conversion: the epsilon of a ``rho``-zCDP release at ``delta``."""
    mirror = _zcdp_mirror(rho)
    certified = float(mirror.map(1.0))
    scale = 1.0 / math.sqrt(2.0 * rho)
    while certified < rho:  # rounding: never state less than rho
        scale = math.nextafter(scale, 0.0)
        mirror = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False),
                                    dp.absolute_distance(T=float), scale=scale)
        certified = float(mirror.map(1.0))  # type: ignore[no-untyped-call]
    approx = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(mirror), delta)
    epsilon, _ = approx.map(1.0)  # type: ignore[no-untyped-call]
    return float(epsilon)


def budget_for(epsilon: float, delta: float) -> tuple[Regime, float]:
    """The regime and total loss to split for a target ``(epsilon, delta)``.

    ``delta == 0``: pure DP, total epsilon. ``delta > 0``: the largest rho (bisection on
    OpenDP's conversion) whose ``(epsilon', delta)`` has ``epsilon' <= epsilon``.
    """
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise SyntheticPrivacyError(f"epsilon must be a positive number, got {epsilon!r}")
    if not (isinstance(delta, int | float) and 0 <= delta < 1e-3):
        raise SyntheticPrivacyError(f"delta must be in [0, 1e-3), got {delta!r}")
    if delta == 0:
        return "pure", float(epsilon)
    lo, hi = 0.0, float(epsilon)  # rho <= epsilon always
    for _ in range(80):
        mid = (lo + hi) / 2
        if mid > 0 and zcdp_to_epsilon(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
    if lo <= 0:  # pragma: no cover - bisection from epsilon > 0 always finds some rho
        raise SyntheticPrivacyError("no rho meets the requested (epsilon, delta)")
    return "zcdp", lo * (1 - 1e-9)


class Accountant:
    """Builds calibrated OpenDP measurements, applies them and records their charges."""

    def __init__(self, regime: Regime, total: float) -> None:
        self.regime: Regime = regime
        self.total = total
        self.charges: list[MechanismCharge] = []

    @property
    def spent(self) -> float:
        """Loss spent so far (epsilon or rho), by basic / zCDP composition."""
        return math.fsum(c.loss for c in self.charges)

    def _calibrated(self, build: Callable[[float], Any], d_in: float, budget: float) -> tuple[
        Any, float, float
    ]:
        if not budget > 0:
            raise SyntheticPrivacyError(f"a measurement's budget must be positive, got {budget}")
        power = 1.0 if self.regime == "pure" else 2.0
        unit_loss = float(build(1.0).map(d_in))
        scale = (unit_loss / budget) ** (1.0 / power)
        for _ in range(10_000):
            measurement = build(scale)
            loss = float(measurement.map(d_in))
            if loss <= budget:
                return measurement, scale, loss
            scale *= 1.0 + 1e-12
        raise SyntheticPrivacyError(  # pragma: no cover - maps are monotone in the scale
            f"OpenDP certifies {loss} > {budget} at scale {scale}"
        )

    def _record(self, name: str, mechanism: str, d_in: float, scale: float, loss: float) -> None:
        self.charges.append(MechanismCharge(name, mechanism, float(d_in), scale, loss))

    def counts(self, name: str, counts: np.ndarray, *, sensitivity: int,
               budget: float) -> np.ndarray:
        """Noisy integer counts; ``sensitivity`` is the L1 (pure) or L2 (zCDP) bound."""
        if self.regime == "pure":
            metric, label = dp.l1_distance(T=int), "discrete Laplace"
            constructor = dp.m.make_laplace
        else:
            metric, label = dp.l2_distance(T=int), "discrete Gaussian"
            constructor = dp.m.make_gaussian
        domain = dp.vector_domain(dp.atom_domain(T=int))
        measurement, scale, loss = self._calibrated(
            lambda s: constructor(domain, metric, scale=s), int(sensitivity), budget
        )
        noisy = np.asarray(measurement([int(x) for x in counts]), dtype=np.int64)
        self._record(name, label, sensitivity, scale, loss)
        return noisy

    def reals(self, name: str, values: np.ndarray, *, sensitivity: float,
              budget: float) -> np.ndarray:
        """Noisy real vector; ``sensitivity`` is the L1 (pure) or L2 (zCDP) bound."""
        if self.regime == "pure":
            metric, label = dp.l1_distance(T=float), "Laplace (float, exact lattice)"
            constructor = dp.m.make_laplace
        else:
            metric, label = dp.l2_distance(T=float), "Gaussian (float, exact lattice)"
            constructor = dp.m.make_gaussian
        domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
        measurement, scale, loss = self._calibrated(
            lambda s: constructor(domain, metric, scale=s), float(sensitivity), budget
        )
        noisy = np.asarray(measurement([float(x) for x in values]), dtype=np.float64)
        self._record(name, label, sensitivity, scale, loss)
        return noisy

    def argmax(self, name: str, scores: np.ndarray, *, sensitivity: float,
               budget: float) -> int:
        """Index of the noisy maximum of ``scores`` (exponential mechanism via Gumbel)."""
        measure = (dp.max_divergence() if self.regime == "pure"
                   else dp.zero_concentrated_divergence())
        domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
        metric = dp.linf_distance(T=float)
        measurement, scale, loss = self._calibrated(
            lambda s: dp.m.make_noisy_max(domain, metric, measure, scale=s),
            float(sensitivity), budget,
        )
        index = int(measurement([float(x) for x in scores]))
        self._record(name, "report noisy max (Gumbel)", sensitivity, scale, loss)
        return index

    def summary(self, *, delta: float, rows_per_unit: int, years: tuple[int, ...],
                privacy_unit: str) -> PrivacySpent:
        """The :class:`PrivacySpent` of everything measured so far."""
        total = self.spent
        if self.regime == "pure":
            return PrivacySpent(total, 0.0, None, tuple(self.charges), rows_per_unit, years,
                                privacy_unit)
        return PrivacySpent(zcdp_to_epsilon(total, delta), delta, total, tuple(self.charges),
                            rows_per_unit, years, privacy_unit)
