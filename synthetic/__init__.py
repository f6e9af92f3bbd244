"""DP synthetic datasets and their evaluation (depends on :mod:`protocols` only).

A node fits a differentially private synthesizer on its records, samples synthetic rows in
the standard's normalised form, evaluates them locally, and releases the rows with the
privacy spent and the policy-filtered evaluation scores::

    train, holdout = split_holdout(records, fraction=0.2, seed=1)
    fitted = fit_synthesizer(train, method="dp_copula", epsilon=1.0, domain=domain)
    rows = fitted.sample(10_000, seed=2)             # every row valid under the standard
    report = evaluate_release(train, rows, holdout=holdout)
    fitted.privacy.epsilon, report.released(EvaluationPolicy())

Methods: ``"dp_copula"`` (DP Gaussian copula after DPCopula) and ``"mst"`` (MST, own
implementation with a tree model, no Private-PGM). All noise comes from OpenDP. SDV's
GaussianCopula (:func:`fit_sdv_baseline_not_private`) is a non-private local baseline for
evaluation and benchmarks only. See docs/synthetic.md.

Modules (private, re-exported here): public domain, bounding and constraints
(``_domain``), OpenDP measurements and accounting (``_mechanisms``), models (``_models``),
fitting and sampling (``_fit``), evaluation (``_evaluate``), the non-private baseline
(``_baseline``), exceptions (``_errors``).

Exceptions::

    SyntheticError
    ├── SyntheticDomainError     (also ValueError) invalid public domain
    ├── SyntheticInputError      (also ValueError) records lack columns; bad sizes
    ├── SyntheticPrivacyError    (also ValueError) invalid epsilon, delta, method
    └── EvaluationError          (also ValueError) evaluation cannot be computed
"""

from synthetic._baseline import NonPrivateBaseline, fit_sdv_baseline_not_private
from synthetic._domain import (
    COLUMNS,
    INPUT_COLUMNS,
    PublicDomain,
    as_reporting_records,
    bound_contributions,
    check_rows,
    split_holdout,
)
from synthetic._errors import (
    EvaluationError,
    SyntheticDomainError,
    SyntheticError,
    SyntheticInputError,
    SyntheticPrivacyError,
)
from synthetic._evaluate import (
    DEFAULT_LINK_COLUMNS,
    DcrScores,
    EvaluationPolicy,
    EvaluationReport,
    QualityScores,
    RiskEstimate,
    evaluate_release,
    risk_from_counts,
)
from synthetic._fit import METHODS, PRIVACY_UNIT, FittedSynthesizer, Method, fit_synthesizer
from synthetic._mechanisms import MechanismCharge, PrivacySpent

__all__ = [
    "COLUMNS",
    "DEFAULT_LINK_COLUMNS",
    "INPUT_COLUMNS",
    "METHODS",
    "PRIVACY_UNIT",
    "DcrScores",
    "EvaluationError",
    "EvaluationPolicy",
    "EvaluationReport",
    "FittedSynthesizer",
    "MechanismCharge",
    "Method",
    "NonPrivateBaseline",
    "PrivacySpent",
    "PublicDomain",
    "QualityScores",
    "RiskEstimate",
    "SyntheticDomainError",
    "SyntheticError",
    "SyntheticInputError",
    "SyntheticPrivacyError",
    "as_reporting_records",
    "bound_contributions",
    "check_rows",
    "evaluate_release",
    "fit_sdv_baseline_not_private",
    "fit_synthesizer",
    "risk_from_counts",
    "split_holdout",
]
