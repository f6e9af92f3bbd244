"""The OpenDP measurements: calibration against their privacy maps, and noise scales."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthetic import SyntheticPrivacyError
from synthetic._mechanisms import Accountant, budget_for, zcdp_to_epsilon


def _discrete_laplace_std(scale: float) -> float:
    a = math.exp(-1.0 / scale)
    return math.sqrt(2.0 * a) / (1.0 - a)


def test_laplace_counts_have_the_stated_scale() -> None:
    acct = Accountant("pure", 10.0)
    zeros = np.zeros(100, dtype=np.int64)
    draws = np.concatenate([acct.counts("h", zeros, sensitivity=4, budget=0.1)
                            for _ in range(100)])
    scale = acct.charges[0].scale
    assert scale == pytest.approx(40.0, rel=1e-9)  # k / epsilon
    assert acct.charges[0].loss <= 0.1
    assert abs(draws.mean()) < 0.1 * scale
    # 10,000 draws: the sample sd of Laplace noise has a relative sd of sqrt(5 / 4n) = 1.1 %;
    # 7 % is 6 of them (about 1e-9 per run; 5 % was about 1e-5); a 10 % wrong scale fails
    assert draws.std() == pytest.approx(_discrete_laplace_std(scale), rel=0.07)


def test_gaussian_counts_have_the_stated_scale() -> None:
    acct = Accountant("zcdp", 1.0)
    draws = np.concatenate([acct.counts("h", np.zeros(100, dtype=np.int64), sensitivity=4,
                                        budget=0.02) for _ in range(100)])
    sigma = acct.charges[0].scale
    assert sigma == pytest.approx(4 / math.sqrt(2 * 0.02), rel=1e-6)  # rho = k^2 / (2 s^2)
    assert draws.std() == pytest.approx(sigma, rel=0.05)


def test_real_vector_noise_has_the_stated_scale() -> None:
    acct = Accountant("pure", 10.0)
    values = np.linspace(-5, 5, 100)
    draws = np.concatenate([acct.reals("c", values, sensitivity=30.0, budget=0.5) - values
                            for _ in range(100)])
    scale = acct.charges[0].scale
    assert scale == pytest.approx(60.0, rel=1e-9)
    assert draws.std() == pytest.approx(math.sqrt(2) * scale, rel=0.07)  # as for the counts


def test_noisy_max_selects_a_clear_winner_and_is_charged() -> None:
    acct = Accountant("pure", 1.0)
    # scale 2 * 4 / 0.01 = 800: a gap of 1e5 is 125 scales, so a wrong pick has probability
    # about e^-125 (a gap of 1e4, 12.5 scales, failed about 1e-4 of runs over the 20 picks)
    picks = [acct.argmax("s", np.array([0.0, 1e5, 0.0]), sensitivity=4, budget=0.01)
             for _ in range(20)]
    assert picks == [1] * 20
    assert all(c.loss <= 0.01 for c in acct.charges)
    assert acct.spent == pytest.approx(0.2, rel=1e-6)


def test_zcdp_budget_is_the_largest_rho_within_epsilon() -> None:
    regime, rho = budget_for(1.0, 1e-6)
    assert regime == "zcdp"
    assert zcdp_to_epsilon(rho, 1e-6) <= 1.0
    assert zcdp_to_epsilon(rho * 1.01, 1e-6) > 1.0
    # the textbook bound eps = rho + 2 sqrt(rho ln(1/delta)) is looser than OpenDP's
    assert rho + 2 * math.sqrt(rho * math.log(1e6)) >= 1.0
    assert budget_for(0.5, 0.0) == ("pure", 0.5)


@pytest.mark.parametrize(("epsilon", "delta"), [(0.0, 0.0), (-1.0, 0.0), (1.0, 0.5),
                                                (math.inf, 0.0)])
def test_invalid_privacy_parameters_are_refused(epsilon: float, delta: float) -> None:
    with pytest.raises(SyntheticPrivacyError):
        budget_for(epsilon, delta)
