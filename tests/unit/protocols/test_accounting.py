"""Privacy accounting: exact pure-DP sums, the zCDP conversion, and why zCDP admits more."""

from __future__ import annotations

import math

import opendp.prelude as dp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import BudgetLimit, PrivacyCost, Spend, guarantee, zcdp_epsilon

dp.enable_features("contrib")


@pytest.mark.parametrize("rho", [0.001, 0.005, 0.05, 0.5, 2.0])
@pytest.mark.parametrize("delta", [1e-6, 1e-9])
def test_zcdp_conversion_equals_opendps(rho: float, delta: float) -> None:
    gaussian = dp.m.make_gaussian(dp.atom_domain(T="f64", nan=False),
                                  dp.absolute_distance(T="f64"), scale=1 / math.sqrt(2 * rho))
    assert gaussian.map(1.0) == pytest.approx(rho)
    opendp_epsilon = dp.c.make_zCDP_to_approxDP(gaussian).map(1.0).epsilon(delta)
    assert zcdp_epsilon(rho, delta) == pytest.approx(opendp_epsilon, rel=1e-9)
    # never worse than the classic bound rho + 2 sqrt(rho log(1/delta))
    assert zcdp_epsilon(rho, delta) <= rho + 2 * math.sqrt(rho * math.log(1 / delta))


def test_pure_releases_are_accounted_exactly_with_no_delta() -> None:
    spend = Spend.total(PrivacyCost(epsilon=e) for e in (0.1, 0.2, 0.3))
    assert spend.epsilon_nano == 600_000_000
    assert guarantee(spend, delta=0.0) == pytest.approx(0.6)
    assert BudgetLimit(epsilon=0.6, delta=0.0).admits(spend)
    assert not BudgetLimit(epsilon=0.6, delta=0.0).admits(
        spend + Spend.of(PrivacyCost(epsilon=1e-9)))


def test_a_cost_is_pure_or_zcdp_never_both() -> None:
    with pytest.raises(ValueError, match="either pure epsilon or zCDP rho"):
        PrivacyCost(epsilon=0.1, rho=0.1)


def test_zcdp_admits_more_gaussian_releases_than_basic_composition() -> None:
    """At the same (epsilon, delta) = (3, 1e-6): Gaussian releases of rho = 0.002 each.

    Basic composition must give each release its own (epsilon_i, delta_i) and add both; with
    delta_i = delta / k the k releases fit while k * epsilon_i <= 3. zCDP adds the rhos and
    converts once."""
    limit, rho = BudgetLimit(epsilon=3.0, delta=1e-6), 0.002

    def basic_admits(k: int) -> bool:
        return k * zcdp_epsilon(rho, limit.delta / k) <= limit.epsilon

    basic = max(k for k in range(1, 2000) if basic_admits(k))
    spend, zcdp = Spend(), 0
    while limit.admits(spend + Spend.of(PrivacyCost(rho=rho))):
        spend, zcdp = spend + Spend.of(PrivacyCost(rho=rho)), zcdp + 1
    assert zcdp > 3 * basic  # measured: 92 vs 10
    assert guarantee(spend, delta=limit.delta) <= limit.epsilon


def test_many_small_pure_releases_compose_tighter_through_zcdp() -> None:
    cost = PrivacyCost(epsilon=0.05)
    limit = BudgetLimit(epsilon=5.0, delta=1e-6)
    spend, admitted = Spend(), 0
    while limit.admits(spend + Spend.of(cost)):
        spend, admitted = spend + Spend.of(cost), admitted + 1
    assert admitted > 300  # measured 370; basic composition stops at exactly 100


def test_remaining_is_exact_for_pure_spend_and_safe_for_zcdp() -> None:
    limit = BudgetLimit(epsilon=2.0, delta=1e-6)
    assert limit.remaining(Spend.of(PrivacyCost(epsilon=1.5))) == 0.5
    spend = Spend.of(PrivacyCost(rho=0.05))
    left = limit.remaining(spend)
    assert 0 < left < 2.0
    assert limit.admits(spend + Spend.of(PrivacyCost(epsilon=left)))
    assert not limit.admits(spend + Spend.of(PrivacyCost(epsilon=left + 1e-3)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.builds(lambda e: PrivacyCost(epsilon=e), st.floats(0.0001, 2.0)),
    st.builds(lambda r: PrivacyCost(rho=r), st.floats(0.00001, 0.5))), max_size=30))
def test_spend_is_order_independent_and_never_under_counts(costs: list[PrivacyCost]) -> None:
    forward, backward = Spend.total(costs), Spend.total(reversed(costs))
    assert forward == backward
    assert forward.epsilon >= sum(c.epsilon for c in costs) - 1e-12
    assert forward.rho >= sum(c.rho for c in costs) - 1e-12
    # the proven epsilon is never above basic composition of the pure part plus conversion
    delta = 1e-6
    assert guarantee(forward, delta=delta) <= (
        forward.epsilon + zcdp_epsilon(forward.rho, delta) + 1e-12)
