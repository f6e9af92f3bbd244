"""Fitting a DP synthesizer and sampling from it: the entry point a node calls.

Sensitivity argument (why the stated privacy holds)
---------------------------------------------------
The privacy unit is the node's: a *contribution unit-year*, all records of one site (else
one contract, else the record alone) whose period lies in one calendar year (column
``contribution_unit`` and the year of ``period``). Neighbouring datasets differ by all
records of one unit-year ``u``.

1. Rows outside the public domain are dropped by a rule that reads each row alone; numeric
   values are clipped to the public bounds. Neither depends on other rows.
2. Each unit-year keeps at most ``k = rows_per_unit`` of its rows (a uniform sample drawn
   per unit-year, :func:`synthetic.bound_contributions`). So ``u`` adds or removes at most
   ``k`` rows and changes no other row.
3. Every statistic the model reads is a sum of per-row terms with bounded norm (one-hot
   histogram cells; clipped normal-score products); its sensitivity is ``k`` times the
   per-row bound (:mod:`synthetic._models` lists each). Normal scores and MST's selection
   scores use only values released earlier, never unreleased data.
4. Each statistic goes through one OpenDP measurement calibrated to that sensitivity
   (:mod:`synthetic._mechanisms`); the losses compose to the stated ``(epsilon, delta)``:
   pure DP sums epsilons (``delta == 0``), zCDP sums rhos and converts with OpenDP.
5. The model and every sample from it are post-processing.

Each unit-year lies in one calendar year, so a release is charged its epsilon in every year
of the domain's periods (:attr:`PrivacySpent.years`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import polars as pl

from synthetic._domain import (
    INPUT_COLUMNS,
    PublicDomain,
    bound_contributions,
    to_polars,
)
from synthetic._errors import SyntheticInputError, SyntheticPrivacyError
from synthetic._mechanisms import Accountant, PrivacySpent, budget_for
from synthetic._models import CopulaModel, TreeModel, fit_copula, fit_mst

__all__ = ["METHODS", "PRIVACY_UNIT", "FittedSynthesizer", "Method", "fit_synthesizer"]

Method = Literal["dp_copula", "mst"]
#: The synthesizers that may produce a release.
METHODS: tuple[Method, ...] = ("dp_copula", "mst")
PRIVACY_UNIT = (
    "one site (else contract, else record) in one calendar year; at most rows_per_unit of "
    "its rows are used"
)
_ROOT = 3  # MST samples from the flow column outwards: flow decides the rules between fields


@dataclass(frozen=True)
class FittedSynthesizer:
    """A DP model of a node's records. Sampling from it costs no further privacy.

    ``privacy`` is what fitting spent (charge it to the node's budget once, in each of
    ``privacy.years``). The model holds only released (noisy) statistics and public domain
    parameters, never records.
    """

    method: Method
    domain: PublicDomain
    privacy: PrivacySpent
    _model: CopulaModel | TreeModel

    @property
    def estimated_rows(self) -> float:
        """The DP estimate of the number of (contribution-bounded) training rows.

        Post-processing of the released marginals (no further privacy cost); a consumer
        that sums synthetic quantities weights each of ``n`` sampled rows by
        ``estimated_rows / n``.
        """
        return float(self._model.estimated_rows)

    def sample(self, n: int, *, seed: int | None = None) -> pl.DataFrame:
        """``n`` synthetic rows of :data:`synthetic.COLUMNS`, each valid under the standard.

        The same ``seed`` gives the same rows from the same fitted model.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SyntheticInputError(f"n must be a non-negative integer, got {n!r}")
        rng = np.random.default_rng(seed)
        codes = self._model.sample_codes(n, rng)
        marginals = self._model.marginals

        def draw(j: int, m: int) -> np.ndarray:
            probs = marginals[j].copy()
            probs[0] = 0.0  # the "absent" code of an optional column
            if probs.sum() <= 0:
                probs[1:] = 1.0
            cdf = np.cumsum(probs)
            drawn = np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right")
            return np.asarray(np.minimum(drawn, probs.size - 1), dtype=np.int64)

        self.domain.enforce_constraints(codes, draw)
        return self.domain.decode(codes, rng)


def fit_synthesizer(
    records: pl.DataFrame | pd.DataFrame,
    *,
    method: Method,
    epsilon: float,
    domain: PublicDomain,
    delta: float = 0.0,
    rows_per_unit: int = 4,
    seed: int | None = None,
    marginal_fraction: float = 0.5,
) -> FittedSynthesizer:
    """Fit a DP synthesizer on a node's records (columns :data:`synthetic.INPUT_COLUMNS`).

    * ``method="dp_copula"``: DP marginals (``marginal_fraction`` of the budget) and a DP
      correlation matrix of normal scores (the rest), in the spirit of DPCopula.
    * ``method="mst"``: MST, DP one-way marginals, DP tree selection, DP two-way marginals.

    Privacy: ``(epsilon, 0)``-DP with ``delta == 0`` (Laplace, Gumbel; matches the node's
    pure-DP budget) or ``(epsilon, delta)``-DP via zCDP with ``delta > 0`` (Gaussian), per
    unit-year, as certified by OpenDP (see the module docstring for the argument). ``seed``
    fixes only the choice of each unit-year's rows, never the privacy noise.
    """
    if method not in METHODS:
        raise SyntheticPrivacyError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < marginal_fraction < 1:
        raise SyntheticPrivacyError("marginal_fraction must be in (0, 1)")
    regime, total = budget_for(epsilon, delta)
    frame = to_polars(records, INPUT_COLUMNS)
    _, inside = domain.encode(frame)
    bounded = bound_contributions(frame.filter(pl.Series(inside)), rows_per_unit=rows_per_unit,
                                  seed=seed)
    codes, _ = domain.encode(bounded)
    acct = Accountant(regime, total)
    names = [c.name for c in domain.columns]
    model: CopulaModel | TreeModel
    if method == "dp_copula":
        model = fit_copula(codes, sizes=domain.sizes, names=names,
                           ordered=[c.ordered for c in domain.columns], acct=acct,
                           k=rows_per_unit, marginal_fraction=marginal_fraction)
    else:
        model = fit_mst(codes, sizes=domain.sizes, names=names, acct=acct, k=rows_per_unit,
                        root=_ROOT)
    privacy = acct.summary(delta=float(delta), rows_per_unit=rows_per_unit,
                           years=domain.years, privacy_unit=PRIVACY_UNIT)
    if privacy.epsilon > epsilon:  # pragma: no cover - calibration never overspends
        raise SyntheticPrivacyError(f"spent epsilon {privacy.epsilon} > requested {epsilon}")
    return FittedSynthesizer(method, domain, privacy, model)
