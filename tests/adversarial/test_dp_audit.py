"""Empirical DP audit: the node's release and OpenDP's mechanism against lower bounds on
epsilon measured from their outputs; two broken mechanisms as negative controls.

The bounds here are computed at confidence ``1 - 1e-6``: a correct mechanism fails a test
with probability below one in a million (the noise is OpenDP's, from the operating system,
and cannot be seeded), and the broken controls are still caught. ``python -m
crimmis_dpn.reliability`` reports the same audits at 99% with more draws
(docs/reliability.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from crimmis_dpn.reliability import (
    _numpy_laplace,
    attainability_events,
    audit,
    clopper_pearson,
    epsilon_lower_bound,
    half_scale_laplace_draws,
    naive_float_laplace_attainable,
    naive_float_laplace_draws,
    node_release_draws,
    node_release_epsilon,
    opendp_laplace_draws,
    threshold_events,
)

CONFIDENCE = 1 - 1e-6
DRAWS = 40_000
SENSITIVITY = 100_000  # 100 t in thousandths


# --------------------------------------------------------------------------- the statistics


def test_clopper_pearson_has_the_closed_forms_at_the_extremes() -> None:
    lower, upper = clopper_pearson(0, 1000, 0.01)
    assert lower == 0.0
    assert upper == pytest.approx(1 - 0.01 ** (1 / 1000), rel=1e-9)
    lower, upper = clopper_pearson(1000, 1000, 0.01)
    assert lower == pytest.approx(0.01 ** (1 / 1000), rel=1e-9)
    assert upper == 1.0
    lower, upper = clopper_pearson(500, 1000, 0.005)
    assert 0.45 < lower < 0.5 < upper < 0.55


def test_clopper_pearson_covers_the_true_proportion() -> None:
    rng = np.random.default_rng(7)
    misses = 0
    for _ in range(2000):
        k = int(rng.binomial(400, 0.03))
        lower, upper = clopper_pearson(k, 400, 0.05)
        misses += not lower <= 0.03 <= upper
    assert misses <= 2000 * 0.1 * 1.3  # two one-sided 5% bounds: at most ~10% misses


def test_identical_mechanisms_give_no_evidence() -> None:
    rng = np.random.default_rng(11)
    same = rng.laplace(0.0, 1.0, 40_000), rng.laplace(0.0, 1.0, 40_000)
    bound = epsilon_lower_bound(*same, threshold_events, confidence=0.99)
    assert bound.epsilon < 0.1


def test_the_bound_grows_with_the_true_epsilon() -> None:
    rng = np.random.default_rng(13)
    bounds = []
    for shift in (0.5, 1.0, 2.0):
        draws = rng.laplace(0.0, 1.0, 60_000), rng.laplace(shift, 1.0, 60_000)
        bounds.append(epsilon_lower_bound(*draws, threshold_events, confidence=0.99).epsilon)
    assert bounds[0] < bounds[1] < bounds[2]
    assert all(b <= s for b, s in zip(bounds, (0.5, 1.0, 2.0), strict=True))
    assert bounds[2] > 1.5


# --------------------------------------------------------------------------- real mechanisms


def test_opendp_laplace_mechanism_stays_within_its_epsilon() -> None:
    result = audit("laplace", lambda n: opendp_laplace_draws(n, epsilon=1.0,
                                                              sensitivity=SENSITIVITY),
                   claimed_epsilon=1.0, draws=DRAWS, confidence=CONFIDENCE)
    assert result.holds, result
    assert result.epsilon_lower_bound > 0.6  # the audit is sharp: the mechanism is tight


@pytest.mark.parametrize("kind", ["sum", "count"])
def test_the_node_release_stays_within_its_epsilon(kind: str) -> None:
    claimed = node_release_epsilon(epsilon=1.0, kind=kind)
    assert claimed <= 1.0
    result = audit(f"compute_release {kind}",
                   lambda n: node_release_draws(n, epsilon=1.0, kind=kind),
                   claimed_epsilon=claimed, draws=DRAWS, confidence=CONFIDENCE)
    assert result.holds, result
    assert result.epsilon_lower_bound > 0.6


def test_node_release_frames_differ_by_one_unit_at_the_bound() -> None:
    # The neighbouring frames really are at the worst case: the cell moves by the bound.
    d, d_prime = node_release_draws(20_000, epsilon=1.0, kind="sum", countries=5)
    # noise Laplace(100): the mean of 20,000 draws has sd 1.0, the difference of two 1.41;
    # 8 is 5.7 sd of the difference (1e-8 per run; 6 was 4.2 sd, 2e-5)
    assert np.mean(d_prime) - np.mean(d) == pytest.approx(100.0, abs=8.0)
    assert np.mean(d) == pytest.approx(50.0, abs=6.0)


# --------------------------------------------------------------------------- negative controls


def test_half_scale_noise_is_caught() -> None:
    result = audit("half scale", lambda n: half_scale_laplace_draws(
        n, epsilon=1.0, sensitivity=SENSITIVITY), claimed_epsilon=1.0, draws=DRAWS,
        confidence=CONFIDENCE)
    assert not result.holds
    assert 1.4 < result.epsilon_lower_bound <= 2.0


def test_the_attack_replicates_numpys_sampler_bit_for_bit() -> None:
    for loc in (0.0, 100.0, 1234.5):
        drawn = np.random.default_rng(3).laplace(loc, 100.0, 5000)
        uniform = np.random.default_rng(3).random(5000)
        replica = [_numpy_laplace(int(u * 2**53), loc, 100.0) for u in uniform]
        assert drawn.tolist() == replica
        assert all(naive_float_laplace_attainable(y, loc, 100.0) for y in drawn[:500].tolist())


def test_textbook_float_laplace_is_caught_by_mironovs_attack() -> None:
    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        return naive_float_laplace_draws(n, loc_d=0.0, loc_d_prime=100.0, scale=100.0)

    result = audit("textbook", sample, claimed_epsilon=1.0, draws=20_000,
                   confidence=CONFIDENCE, events=attainability_events(0.0, 100.0, 100.0))
    assert not result.holds
    assert result.epsilon_lower_bound > 5.0
    assert result.p_denominator == 0.0  # never produced from the neighbour: infinite loss
    assert result.p_numerator > 0.5


def test_mironovs_events_find_nothing_in_the_opendp_release() -> None:
    # The same attack pointed at the mechanism the node uses: whatever the events, an
    # epsilon-DP mechanism keeps their probabilities within e^epsilon of each other.
    events = attainability_events(0.0, float(SENSITIVITY), float(SENSITIVITY))
    result = audit("opendp vs Mironov", lambda n: opendp_laplace_draws(
        n, epsilon=1.0, sensitivity=SENSITIVITY), claimed_epsilon=1.0, draws=10_000,
        confidence=CONFIDENCE, events=events)
    assert result.holds, result
