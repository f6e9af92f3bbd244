"""Differential-privacy mechanisms shared by nodes (who add noise) and the coordinator
(who reports error bars from the noise scales).

All noise comes from OpenDP (``opendp.measurements.make_laplace``) over *integers*: values are
first fixed-point encoded with :data:`FIXED_POINT_SCALE`, so sums are exact and the sampler is
OpenDP's discrete Laplace, which does not have the floating-point weaknesses of a textbook
``x + numpy.random.laplace(b)`` (Mironov, CCS 2012).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import opendp.prelude as dp

from protocols._errors import PrivacyParameterError

__all__ = [
    "FIXED_POINT_SCALE",
    "LaplaceMechanism",
    "from_fixed_point",
    "laplace_interval_halfwidth",
    "laplace_mechanism",
    "laplace_std",
    "to_fixed_point",
]

dp.enable_features("contrib")

#: Values are released in thousandths of their unit (kilograms for tonnes).
FIXED_POINT_SCALE = 1000
#: Largest absolute fixed-point value a sum may reach: far below 2**63 so that no i64 overflows.
MAX_FIXED_POINT = 2**62


def to_fixed_point(value: float) -> int:
    """Round a measure value to its fixed-point integer (thousandths)."""
    return round(value * FIXED_POINT_SCALE)


def from_fixed_point(value: float) -> float:
    """Convert a fixed-point value back to measure units."""
    return value / FIXED_POINT_SCALE


@dataclass(frozen=True)
class LaplaceMechanism:
    """Discrete Laplace noise on an integer vector, from OpenDP.

    Privacy: for vectors at L1 distance at most ``sensitivity`` the release is
    ``(epsilon, 0)``-DP, where ``epsilon`` is OpenDP's own privacy map at ``sensitivity``
    (``epsilon = sensitivity / scale``). Build it with :func:`laplace_mechanism`.
    """

    sensitivity: int
    scale: float
    epsilon: float
    _measurement: Any = field(repr=False, compare=False)

    def release(self, values: Sequence[int]) -> list[int]:
        """Add independent discrete Laplace noise of scale ``scale`` to every value."""
        if not values:
            return []
        for v in values:
            if abs(v) > MAX_FIXED_POINT:
                raise PrivacyParameterError(f"value {v} is outside the fixed-point range")
        return list(self._measurement(list(values)))


def laplace_mechanism(*, sensitivity: int, epsilon: float) -> LaplaceMechanism:
    """Build the discrete Laplace mechanism that is ``(epsilon, 0)``-DP at L1 ``sensitivity``.

    ``sensitivity`` is in fixed-point units (an integer >= 1). The returned mechanism's
    ``epsilon`` is what OpenDP's privacy map certifies, never more than asked for.
    """
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int) or sensitivity < 1:
        raise PrivacyParameterError(f"sensitivity must be an integer >= 1, got {sensitivity!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise PrivacyParameterError(f"epsilon must be a positive number, got {epsilon!r}")
    scale = sensitivity / epsilon
    for _ in range(64):  # float rounding may certify one ulp over: widen the scale a hair
        measurement = dp.m.make_laplace(  # 64-bit integers: sums of kilograms overflow i32
            dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
        )
        certified = float(measurement.map(sensitivity))  # type: ignore[no-untyped-call]
        if certified <= epsilon:
            return LaplaceMechanism(sensitivity, scale, certified, measurement)
        scale = math.nextafter(scale, math.inf)
    raise PrivacyParameterError(  # pragma: no cover - OpenDP's map is monotone in the scale
        f"OpenDP certifies epsilon {certified} > requested {epsilon} at scale {scale}"
    )


def laplace_std(scale: float) -> float:
    """Standard deviation of Laplace noise of scale ``b``: ``sqrt(2) * b``."""
    return math.sqrt(2.0) * scale


def laplace_interval_halfwidth(scales: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width ``h`` such that ``P(|sum of independent Laplace(b_i)| <= h) = confidence``.

    For one term this is exact: ``b * ln(1 / (1 - confidence))``. For several it is the
    quantile of the sum, estimated from 200,000 draws of the *public* noise distribution
    with a fixed seed (this computes an error bar; it is not noise added to any data).
    The (discrete) noise differs from the continuous Laplace by less than one fixed-point unit.
    """
    if not 0 < confidence < 1:
        raise PrivacyParameterError(f"confidence must be in (0, 1), got {confidence}")
    active = tuple(sorted(round(float(b), 12) for b in scales if b > 0))
    if not active:
        return 0.0
    if len(active) == 1:
        return active[0] * math.log(1.0 / (1.0 - confidence))
    return _simulated_halfwidth(active, confidence)


@lru_cache(maxsize=4096)
def _simulated_halfwidth(scales: tuple[float, ...], confidence: float) -> float:
    rng = np.random.default_rng(20240601)
    draws = 200_000
    total = np.zeros(draws)
    for b in scales:
        total += rng.laplace(0.0, b, size=draws)
    return float(np.quantile(np.abs(total), confidence))
