"""Distributed discrete Gaussian noise: its accounting (Kairouz-Liu-Steinke), its sampler
(OpenDP), its tail bound, and the round parameters built from them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import opendp.prelude as dp
import pytest
from scipy import stats

from protocols import (
    NOISE_FAILURE_PROBABILITY,
    NoiseBoundExceededError,
    SecAggConfig,
    SecAggParameterError,
    calibrate_node_sigma,
    discrete_gaussian_share,
    distributed_gaussian_rho,
    dropout_tolerant_threshold,
    kls_tau,
    local_share_rho,
    noise_tail_bound,
    plan_secagg_round,
    zcdp_epsilon,
    zcdp_rho_for_epsilon,
)

RHO_EPS1 = zcdp_rho_for_epsilon(epsilon=1.0, delta=1e-6)
IDS = [f"node-{i:02d}" for i in range(10)]


def test_rho_for_epsilon_inverts_the_accounting_conversion() -> None:
    assert zcdp_epsilon(RHO_EPS1, 1e-6) == pytest.approx(1.0, abs=1e-9)
    assert zcdp_epsilon(RHO_EPS1 * 1.01, 1e-6) > 1.0
    classic = (math.sqrt(math.log(1e6) + 1) - math.sqrt(math.log(1e6))) ** 2
    assert classic <= RHO_EPS1  # the tighter conversion allows at least the classic rho


def test_tau_is_negligible_for_realistic_parameters() -> None:
    # Realistic: unit_sum_bound 1000 t = 1e6 fixed-point units at epsilon 1, 100 nodes.
    sigma = calibrate_node_sigma(rho=RHO_EPS1, l1_sensitivity=10**6, l2_sensitivity=10**6,
                                 min_survivors=100, dimension=1000)
    assert sigma > 1e5
    assert kls_tau(node_sigma=sigma, survivors=100) == 0.0
    assert kls_tau(node_sigma=10.0, survivors=1000) < 1e-300
    # For a tiny sigma (a count of sensitivity 1 over 100 nodes) tau is not negligible, and
    # the calibration widens sigma until the bound including tau holds.
    assert kls_tau(node_sigma=0.5, survivors=100) > 1.0
    small = calibrate_node_sigma(rho=RHO_EPS1, l1_sensitivity=1, l2_sensitivity=1,
                                 min_survivors=100, dimension=1000)
    assert distributed_gaussian_rho(l1_sensitivity=1, l2_sensitivity=1, node_sigma=small,
                                    survivors=100, dimension=1000) <= RHO_EPS1


def test_one_survivor_is_exactly_the_discrete_gaussian_and_opendp_agrees() -> None:
    share = discrete_gaussian_share(node_sigma=37.0)
    ours = distributed_gaussian_rho(l1_sensitivity=100, l2_sensitivity=100, node_sigma=37.0,
                                    survivors=1, dimension=50)
    assert ours == pytest.approx(100**2 / (2 * 37.0**2), rel=1e-12)
    assert share.rho_at(100) == pytest.approx(ours, rel=1e-9)
    assert local_share_rho(l2_sensitivity=100, node_sigma=37.0) == pytest.approx(ours, rel=1e-9)
    central = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64")),
                                 dp.l2_distance(T="i64"), scale=37.0 * math.sqrt(9))
    # m shares of s behave like one Gaussian of scale s sqrt(m) (tau negligible here).
    nine = distributed_gaussian_rho(l1_sensitivity=100, l2_sensitivity=100, node_sigma=37.0,
                                    survivors=9, dimension=50)
    assert nine == pytest.approx(float(central.map(100)), rel=1e-9)


def test_rho_decreases_with_survivors_and_uses_the_l1_bound_when_tighter() -> None:
    rhos = [distributed_gaussian_rho(l1_sensitivity=10, l2_sensitivity=10, node_sigma=5.0,
                                     survivors=m, dimension=1) for m in range(1, 20)]
    assert all(a > b for a, b in itertools.pairwise(rhos))
    with pytest.raises(SecAggParameterError):
        distributed_gaussian_rho(l1_sensitivity=1, l2_sensitivity=2, node_sigma=5.0,
                                 survivors=2, dimension=1)
    with pytest.raises(SecAggParameterError):
        distributed_gaussian_rho(l1_sensitivity=1, l2_sensitivity=1, node_sigma=0.4,
                                 survivors=2, dimension=1)


@pytest.mark.parametrize("min_survivors", [1, 7, 10, 100])
def test_calibration_meets_the_target_rho_tightly(min_survivors: int) -> None:
    sigma = calibrate_node_sigma(rho=RHO_EPS1, l1_sensitivity=1000, l2_sensitivity=1000,
                                 min_survivors=min_survivors, dimension=1000)
    achieved = distributed_gaussian_rho(l1_sensitivity=1000, l2_sensitivity=1000,
                                        node_sigma=sigma, survivors=min_survivors,
                                        dimension=1000)
    assert achieved <= RHO_EPS1
    assert achieved > RHO_EPS1 * 0.995
    # The total noise equals a central curator's sigma = D2 / sqrt(2 rho).
    assert sigma * math.sqrt(min_survivors) == pytest.approx(1000 / math.sqrt(2 * RHO_EPS1),
                                                             rel=1e-3)


def test_tail_bound_formula_and_its_failure_probability() -> None:
    tail = noise_tail_bound(node_sigma=100.0, nodes=10, cells=1000)
    assert tail == math.ceil(100.0 * math.sqrt(2 * math.log(2 * 10_000 / 2.0**-40)))
    # Sub-Gaussian bound at T: union over 10,000 draws stays below 2**-40.
    assert 10_000 * 2 * math.exp(-(tail**2) / (2 * 100.0**2)) <= NOISE_FAILURE_PROBABILITY


def test_share_variance_matches_sigma_squared() -> None:
    """Chi-square test of the sampler's variance: sum(x^2)/s^2 ~ chi2(k) for k draws.

    Fails if the variance is off by more than about 5% (p-value bound 1e-6 two-sided).
    """
    sigma, k = 20.0, 60_000
    share = discrete_gaussian_share(node_sigma=sigma)
    noise = np.array(share.add_noise([0] * k), dtype=np.float64)
    statistic = float(np.sum(noise**2)) / sigma**2
    p = 2 * min(stats.chi2.cdf(statistic, k), stats.chi2.sf(statistic, k))
    assert p > 1e-6, (statistic / k, p)
    assert abs(float(noise.mean())) < 6 * sigma / math.sqrt(k)


def test_noise_outside_the_tail_bound_is_refused() -> None:
    share = discrete_gaussian_share(node_sigma=1000.0)
    with pytest.raises(NoiseBoundExceededError):
        share.add_noise([0] * 100, tail_bound=0)
    assert len(share.add_noise([5] * 100, tail_bound=10**6)) == 100


def test_plan_builds_the_dropout_tolerant_and_the_exact_calibrations() -> None:
    tolerant = plan_secagg_round(node_ids=IDS, cells=100, clip=10**9, l1_sensitivity=1000,
                                 rho=RHO_EPS1)
    exact = plan_secagg_round(node_ids=IDS, cells=100, clip=10**9, l1_sensitivity=1000,
                              rho=RHO_EPS1, tolerate_dropouts=False)
    assert tolerant.threshold == exact.threshold == dropout_tolerant_threshold(10) == 7
    assert (tolerant.min_survivors, exact.min_survivors) == (7, 10)
    assert (tolerant.required_survivors, exact.required_survivors) == (7, 10)
    assert tolerant.node_sigma / exact.node_sigma == pytest.approx(math.sqrt(10 / 7), rel=1e-3)
    assert tolerant.released_rho() <= RHO_EPS1
    assert tolerant.released_rho(10) < tolerant.released_rho(7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": 5}, "threshold"),
        ({"threshold": 11}, "threshold"),
        ({"node_ids": tuple(reversed(IDS))}, "sorted"),
        ({"node_ids": ("Bad id", *IDS[1:])}, "sorted|invalid"),
        ({"min_survivors": 11}, "min_survivors"),
        ({"l2_sensitivity": 2000}, "l2_sensitivity"),
        ({"clip": 2**62}, "overflow"),
        ({"modulus_bits": 32, "clip": 10**9}, "overflow"),
    ],
)
def test_invalid_round_parameters_are_refused_up_front(change: dict[str, object],
                                                       message: str) -> None:
    fields: dict[str, object] = {
        "round_id": "0" * 32, "node_ids": tuple(IDS), "threshold": 7, "min_survivors": 7,
        "cells": 100, "clip": 10**6, "node_sigma": 1000.0, "l1_sensitivity": 1000,
        "l2_sensitivity": 1000,
    }
    SecAggConfig.model_validate(fields)
    with pytest.raises(SecAggParameterError, match=message):
        SecAggConfig.model_validate({**fields, **change})
