"""DP mechanisms: OpenDP's discrete Laplace, its certified epsilon, the noise distribution,
error bars and the fixed-point encoding.

The statistical tests draw fresh OpenDP noise (it cannot be seeded), so each can fail by chance;
their thresholds put that chance at or below about 1 in 1,000,000 per run.
"""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pytest
from scipy import stats

from protocols import (
    FIXED_POINT_SCALE,
    PrivacyParameterError,
    from_fixed_point,
    laplace_interval_halfwidth,
    laplace_mechanism,
    laplace_std,
    to_fixed_point,
)
from protocols._dp import MAX_FIXED_POINT

N = 20_000


# --- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("sensitivity", [0, -1, 1.5, 1000.0, "10", None])
def test_sensitivity_must_be_a_positive_integer(sensitivity: object) -> None:
    with pytest.raises(PrivacyParameterError) as exc_info:
        laplace_mechanism(sensitivity=sensitivity, epsilon=1.0)  # type: ignore[arg-type]
    assert str(exc_info.value) == f"sensitivity must be an integer >= 1, got {sensitivity!r}"


@pytest.mark.parametrize("epsilon", [0.0, -0.5, math.nan, math.inf])
def test_epsilon_must_be_positive_and_finite(epsilon: float) -> None:
    with pytest.raises(PrivacyParameterError) as exc_info:
        laplace_mechanism(sensitivity=10, epsilon=epsilon)
    assert str(exc_info.value) == f"epsilon must be a positive number, got {epsilon!r}"


def test_privacy_parameter_error_is_a_value_error() -> None:
    assert issubclass(PrivacyParameterError, ValueError)


# --- certified epsilon -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sensitivity", "epsilon"),
    [(1, 0.1), (7, 0.3), (1000, 1.0), (12, 0.5), (123_456, 0.7), (3, 1 / 3), (5_000_000, 2.0)],
)
def test_epsilon_is_what_opendp_certifies_at_sensitivity_over_scale(
    sensitivity: int, epsilon: float
) -> None:
    mechanism = laplace_mechanism(sensitivity=sensitivity, epsilon=epsilon)
    assert mechanism.sensitivity == sensitivity
    # the scale is sensitivity / epsilon, widened by at most a few ulps when OpenDP's float
    # arithmetic would otherwise certify a hair more than the requested epsilon
    assert mechanism.scale >= sensitivity / epsilon
    assert mechanism.scale == pytest.approx(sensitivity / epsilon, rel=1e-14)
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=mechanism.scale
    )
    certified = measurement.map(sensitivity)  # type: ignore[no-untyped-call]
    assert mechanism.epsilon == float(certified)
    assert mechanism.epsilon == pytest.approx(sensitivity / mechanism.scale, rel=1e-12)
    assert mechanism.epsilon <= epsilon  # never more than asked for


def test_exact_scale_and_epsilon_for_round_numbers() -> None:
    mechanism = laplace_mechanism(sensitivity=1000, epsilon=1.0)
    assert (mechanism.sensitivity, mechanism.scale, mechanism.epsilon) == (1000, 1000.0, 1.0)
    mechanism = laplace_mechanism(sensitivity=1, epsilon=0.1)
    assert (mechanism.scale, mechanism.epsilon) == (10.0, 0.1)


# --- the noise -------------------------------------------------------------------------


def test_release_of_an_empty_vector_is_empty() -> None:
    assert laplace_mechanism(sensitivity=1, epsilon=1.0).release([]) == []


def test_release_refuses_values_outside_the_fixed_point_range() -> None:
    mechanism = laplace_mechanism(sensitivity=1, epsilon=1.0)
    with pytest.raises(PrivacyParameterError) as exc_info:
        mechanism.release([0, MAX_FIXED_POINT + 1])
    assert str(exc_info.value) == f"value {MAX_FIXED_POINT + 1} is outside the fixed-point range"
    with pytest.raises(PrivacyParameterError):
        mechanism.release([-MAX_FIXED_POINT - 1])


def test_noise_has_the_laplace_distribution_of_the_stated_scale() -> None:
    mechanism = laplace_mechanism(sensitivity=1000, epsilon=1.0)
    b = mechanism.scale
    assert b == 1000.0
    out = mechanism.release([0] * N)

    # (c) integers, one per input
    assert len(out) == N
    assert all(type(v) is int for v in out)

    noise = np.asarray(out, dtype=float)
    # (a) E|X| = b for Laplace(b), and sd(|X|) = b: 5 standard errors of the sample mean
    # (two-sided tail 6e-7 per run; 4 gave 6e-5); a 10 % wrong scale is 14 of them off
    mad = float(np.mean(np.abs(noise)))
    assert abs(mad - b) <= 5 * b / math.sqrt(N), mad
    # the noise is centred: sd(X) = sqrt(2) b (5 standard errors, as above)
    assert abs(float(np.mean(noise))) <= 5 * math.sqrt(2) * b / math.sqrt(N)

    # (b) Kolmogorov-Smirnov against the continuous Laplace(b); the discrete distribution
    # differs from it by at most about 1 / (2b) = 0.0005 in CDF, far below the KS critical
    # value 2.69 / sqrt(N) = 0.019 at alpha = 1e-6 (a correct sampler fails about 1e-6 of
    # runs; alpha = 0.001 failed one run in a thousand)
    assert stats.kstest(noise, stats.laplace(scale=b).cdf).pvalue >= 1e-6
    # ...and the same test does tell a 20 % wrong scale apart (the test has power): the KS
    # statistic against 1.2 b (0.8 b) is about 0.036 (0.044) with sd 0.002, i.e. 8 (12) sd
    # above the critical value, so these fail by chance with probability far below 1e-6
    assert stats.kstest(noise, stats.laplace(scale=1.2 * b).cdf).pvalue < 1e-6
    assert stats.kstest(noise, stats.laplace(scale=0.8 * b).cdf).pvalue < 1e-6


def test_noise_is_added_to_the_values() -> None:
    mechanism = laplace_mechanism(sensitivity=10, epsilon=1.0)  # scale 10
    values = [1_000_000] * 5000 + [-2_000_000] * 5000
    out = np.asarray(mechanism.release(values), dtype=float)
    # sd of the mean of 5000 draws is sqrt(2) * 10 / sqrt(5000) = 0.2
    assert abs(out[:5000].mean() - 1_000_000) <= 1.0
    assert abs(out[5000:].mean() + 2_000_000) <= 1.0
    assert np.max(np.abs(out[:5000] - 1_000_000)) < 500  # P(|X| > 500) = exp(-50)


def test_noise_varies_between_releases_and_between_cells() -> None:
    mechanism = laplace_mechanism(sensitivity=1000, epsilon=1.0)
    first = mechanism.release([0] * 100)
    second = mechanism.release([0] * 100)
    # P(two noise values are equal) < 1/2000 per cell for scale 1000
    assert first != second
    assert len(set(first)) > 50


def test_a_smaller_epsilon_gives_more_noise() -> None:
    small = np.abs(laplace_mechanism(sensitivity=100, epsilon=0.1).release([0] * 2000))
    large = np.abs(laplace_mechanism(sensitivity=100, epsilon=10.0).release([0] * 2000))
    # expected mean absolute noise: 1000 versus 10
    assert small.mean() > 10 * large.mean()


# --- error bars ------------------------------------------------------------------------


@pytest.mark.parametrize("b", [0.5, 1.0, 100.0, 12_345.678])
@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.99])
def test_single_term_halfwidth_is_exact(b: float, confidence: float) -> None:
    expected = b * math.log(1.0 / (1.0 - confidence))
    assert laplace_interval_halfwidth([b], confidence) == pytest.approx(expected, rel=1e-12)


def test_single_term_halfwidth_values() -> None:
    assert laplace_interval_halfwidth([100.0]) == pytest.approx(100 * math.log(20), rel=1e-12)
    assert laplace_interval_halfwidth([100.0], 0.9) == pytest.approx(
        100 * math.log(10), rel=1e-12
    )


def test_zero_scales_are_ignored() -> None:
    assert laplace_interval_halfwidth([]) == 0.0
    assert laplace_interval_halfwidth([0.0, 0.0]) == 0.0
    assert laplace_interval_halfwidth([0.0, 50.0, 0.0]) == laplace_interval_halfwidth([50.0])


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5])
def test_confidence_must_be_inside_zero_one(confidence: float) -> None:
    with pytest.raises(PrivacyParameterError) as exc_info:
        laplace_interval_halfwidth([1.0], confidence)
    assert str(exc_info.value) == f"confidence must be in (0, 1), got {confidence}"


def test_two_equal_terms_match_the_closed_form() -> None:
    # The sum S of two independent Laplace(b) has P(|S| > h) = exp(-x) (1 + x / 2), x = h / b.
    b = 100.0
    h = laplace_interval_halfwidth([b, b], 0.95)
    x = h / b
    coverage = 1 - math.exp(-x) * (1 + x / 2)
    # 200,000 simulated draws: standard error of the coverage about 0.0005
    assert abs(coverage - 0.95) <= 0.0025, coverage


@pytest.mark.parametrize(
    ("scales", "confidence"),
    [([100.0, 100.0], 0.95), ([50.0, 100.0, 200.0, 400.0], 0.95), ([1.0] * 10, 0.9),
     ([3.0, 7.0, 11.0], 0.99)],
)
def test_several_terms_have_the_stated_coverage(scales: list[float], confidence: float) -> None:
    h = laplace_interval_halfwidth(scales, confidence)
    assert h > laplace_interval_halfwidth([max(scales)], confidence) * 0.99
    draws = 200_000
    rng = np.random.default_rng(7)
    total = np.zeros(draws)
    for b in scales:
        total += rng.laplace(0.0, b, size=draws)
    coverage = float(np.mean(np.abs(total) <= h))
    # two independent sets of 200,000 draws: 4 standard errors of the difference
    tolerance = 4 * math.sqrt(2 * confidence * (1 - confidence) / draws)
    assert abs(coverage - confidence) <= tolerance, coverage


def test_halfwidth_is_deterministic_and_order_independent() -> None:
    a = laplace_interval_halfwidth([30.0, 10.0, 20.0])
    assert a == laplace_interval_halfwidth([10.0, 20.0, 30.0])
    assert a == laplace_interval_halfwidth((20.0, 30.0, 10.0))


def test_halfwidth_scales_linearly() -> None:
    one = laplace_interval_halfwidth([1.0, 2.0])
    assert laplace_interval_halfwidth([10.0, 20.0]) == pytest.approx(10 * one, rel=0.02)


def test_laplace_std() -> None:
    assert laplace_std(1.0) == math.sqrt(2.0)
    assert laplace_std(1000.0) == pytest.approx(1414.213562373095, rel=1e-15)
    assert laplace_std(0.0) == 0.0


# --- fixed point -----------------------------------------------------------------------


def test_fixed_point_scale() -> None:
    assert FIXED_POINT_SCALE == 1000


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0.0, 0), (1.0, 1000), (12.345, 12345), (-0.001, -1), (0.0004, 0), (0.0006, 1),
     (1e6, 1_000_000_000), (2.5e-4, 0), (1234.5678, 1234568)],
)
def test_to_fixed_point(value: float, encoded: int) -> None:
    result = to_fixed_point(value)
    assert type(result) is int
    assert result == encoded


@pytest.mark.parametrize(
    ("encoded", "value"), [(0, 0.0), (12345, 12.345), (-1, -0.001), (1_000_000_000, 1e6)]
)
def test_from_fixed_point(encoded: int, value: float) -> None:
    assert from_fixed_point(encoded) == value


def test_fixed_point_round_trip_to_a_thousandth() -> None:
    for value in [0.0, 0.001, 3.14159, 42.0, 987654.321]:
        assert abs(from_fixed_point(to_fixed_point(value)) - value) <= 0.0005


def test_sums_beyond_32_bits_are_released() -> None:
    """Found by fuzzing: kilogram sums above 2**31 (2,147 t... x1000) overflowed i32."""
    mechanism = laplace_mechanism(sensitivity=398_090_071_498, epsilon=1.0)
    out = mechanism.release([20_000_000_000_000, 0])  # 20 Mt of copper, in kilograms
    assert len(out) == 2 and all(isinstance(v, int) for v in out)
    assert abs(out[0] - 20_000_000_000_000) < 50 * mechanism.scale
