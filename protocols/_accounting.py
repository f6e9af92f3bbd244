"""Privacy accounting: what a sequence of releases costs, in pure DP and zero-concentrated DP.

Every release has a :class:`PrivacyCost`: either pure ``epsilon`` (the discrete Laplace
mechanism and the DP synthesizers are ``(epsilon, 0)``-DP) or ``rho`` (Gaussian mechanisms,
including the distributed discrete Gaussian of secure aggregation, are ``rho``-zCDP; Bun &
Steinke, TCC 2016). :class:`Spend` sums costs *exactly* (integers of nano-epsilon and
nano-rho, each rounded up), and :func:`guarantee` turns a spend into the smallest epsilon this
module can prove at a given ``delta``, as the minimum of two valid bounds:

* **basic + conversion**: ``sum(epsilon_i) + eps(sum(rho_j), delta)`` — pure-DP releases are
  accounted exactly (with no zCDP release the guarantee is ``(sum(epsilon_i), 0)``);
* **all in zCDP**: an ``epsilon``-DP release is ``epsilon**2 / 2``-zCDP (Bun & Steinke,
  Prop. 1.4), so the whole spend is ``sum(rho_j) + sum(epsilon_i**2) / 2``-zCDP, converted
  once — much tighter than adding epsilons when there are many small releases.

The zCDP to ``(epsilon, delta)`` conversion is Canonne, Kamath & Steinke (NeurIPS 2020,
Prop. 12 / Cor. 13): ``rho``-zCDP implies ``(epsilon, delta)``-DP for
``delta = exp((a - 1)(a rho - epsilon)) / (a - 1) * (1 - 1/a)**a`` at any order ``a > 1``;
:func:`zcdp_epsilon` minimises the implied epsilon over ``a`` (and is never worse than the
classic ``rho + 2 sqrt(rho log(1/delta))``). Tests compare it with OpenDP's own conversion.

Both the node (which enforces its budget) and the auditor (who recomputes spend from the
ledger) use these functions, so they cannot disagree on arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "NANO",
    "BudgetLimit",
    "PrivacyCost",
    "Spend",
    "guarantee",
    "to_nano",
    "zcdp_epsilon",
]

#: Costs are kept as integers of 1e-9 (nano-epsilon, nano-rho) so that sums are exact.
NANO = 1_000_000_000


def to_nano(value: float) -> int:
    """``value`` in nano units, rounded up (a cost is never under-counted)."""
    return math.ceil(value * NANO - 1e-6)


class PrivacyCost(BaseModel):
    """What one release costs: pure ``epsilon`` or ``rho`` (zCDP), never both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: Annotated[float, Field(ge=0, le=100)] = 0.0
    rho: Annotated[float, Field(ge=0, le=100)] = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.epsilon > 0 and self.rho > 0:
            raise ValueError("a release costs either pure epsilon or zCDP rho, not both")
        return self

    @property
    def definition(self) -> str:
        """``pure`` or ``zcdp``: the privacy definition the mechanism was proven in."""
        return "zcdp" if self.rho > 0 else "pure"

    def describe(self) -> str:
        """Short human form, e.g. ``epsilon=0.5`` or ``rho=0.005``."""
        return f"rho={self.rho:g}" if self.rho > 0 else f"epsilon={self.epsilon:g}"


class Spend(BaseModel):
    """A sum of costs, exact: nano-epsilon of pure releases, nano-rho of zCDP releases, and
    the nano-rho the pure releases are worth in zCDP (``epsilon**2 / 2`` each, rounded up)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon_nano: int = 0
    rho_nano: int = 0
    pure_rho_nano: int = 0

    @classmethod
    def of(cls, cost: PrivacyCost) -> Spend:
        """The spend of a single release."""
        return cls(epsilon_nano=to_nano(cost.epsilon), rho_nano=to_nano(cost.rho),
                   pure_rho_nano=to_nano(cost.epsilon**2 / 2))

    @classmethod
    def total(cls, costs: Iterable[PrivacyCost]) -> Spend:
        """The spend of a sequence of releases."""
        spend = cls()
        for cost in costs:
            spend = spend + cls.of(cost)
        return spend

    def __add__(self, other: Spend) -> Spend:
        return Spend(epsilon_nano=self.epsilon_nano + other.epsilon_nano,
                     rho_nano=self.rho_nano + other.rho_nano,
                     pure_rho_nano=self.pure_rho_nano + other.pure_rho_nano)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(epsilon_nano=self.epsilon_nano - other.epsilon_nano,
                     rho_nano=self.rho_nano - other.rho_nano,
                     pure_rho_nano=self.pure_rho_nano - other.pure_rho_nano)

    @property
    def epsilon(self) -> float:
        """Sum of the pure releases' epsilons."""
        return self.epsilon_nano / NANO

    @property
    def rho(self) -> float:
        """Sum of the zCDP releases' rhos."""
        return self.rho_nano / NANO


class BudgetLimit(BaseModel):
    """A budget: the ``(epsilon, delta)`` a period's (or a tier's) releases may reach."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: Annotated[float, Field(gt=0, le=100)]
    delta: Annotated[float, Field(ge=0, lt=1)] = 1e-6

    def admits(self, spend: Spend) -> bool:
        """Whether ``spend`` stays within this budget."""
        return guarantee(spend, delta=self.delta) <= self.epsilon + 1e-12

    def remaining(self, spend: Spend) -> float:
        """The largest pure epsilon one more release could cost within this budget.

        Exact (``epsilon - sum``) while the sum of pure epsilons is what binds; once zCDP
        composition is tighter, found by bisection on :meth:`admits` and rounded down to
        1e-9, so a release of the returned cost is always admitted.
        """
        if not self.admits(spend):
            return 0.0
        exact = max(0, to_nano(self.epsilon) - spend.epsilon_nano) / NANO
        if self.admits(spend + Spend.of(PrivacyCost(epsilon=exact))) and not self.admits(
                spend + Spend.of(PrivacyCost(epsilon=min(100.0, exact + 1e-9)))):
            return exact
        low, high = 0.0, 100.0
        for _ in range(80):
            middle = (low + high) / 2
            if self.admits(spend + Spend.of(PrivacyCost(epsilon=middle))):
                low = middle
            else:
                high = middle
        return math.floor(low * NANO) / NANO


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The smallest epsilon such that ``rho``-zCDP implies ``(epsilon, delta)``-DP.

    Canonne, Kamath & Steinke (2020), Prop. 12, minimised over the Renyi order; ``inf`` when
    ``delta`` is 0 and ``rho`` is positive (zCDP never gives pure DP), 0 when ``rho`` is 0.
    """
    if rho <= 0:
        return 0.0
    if delta <= 0:
        return math.inf
    log_delta = math.log(delta)
    classic = rho + 2 * math.sqrt(rho * -log_delta)

    def at(order: float) -> float:
        return (order * rho
                - (log_delta + math.log(order - 1) - order * math.log1p(-1 / order))
                / (order - 1))
    # The bound is unimodal in log(order): golden-section search over log(order - 1).
    low, high = math.log(1e-6), math.log(1e7)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = at(1 + math.exp(a)), at(1 + math.exp(b))
    for _ in range(200):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = at(1 + math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = at(1 + math.exp(b))
    return max(0.0, min(classic, fa, fb))


def guarantee(spend: Spend, *, delta: float) -> float:
    """The epsilon that ``spend`` is proven to stay within at ``delta`` (module docstring)."""
    pure = spend.epsilon_nano / NANO
    rho = spend.rho_nano / NANO
    basic = pure + zcdp_epsilon(rho, delta)
    all_zcdp = zcdp_epsilon(rho + spend.pure_rho_nano / NANO, delta)
    return min(basic, all_zcdp)
