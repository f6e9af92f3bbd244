"""The evaluation: attacks detect a copying "synthesizer", not an independent one; the
report holds scores only."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from synthetic import (
    EvaluationError,
    EvaluationPolicy,
    EvaluationReport,
    evaluate_release,
    risk_from_counts,
)
from tests.unit.synthetic.conftest import make_records

LINK = (("period", "commodity", "flow", "quantity_t"),
        ("country", "stage", "contract_type", "price_usd_t"))


@pytest.fixture(scope="module")
def sets() -> dict[str, pl.DataFrame]:
    # price records carrying a quantity: both linkability halves then hold a number
    kw = {"rows_per_site": 4, "price_quantity": True}
    return {"train": make_records(2000, seed=1, **kw),
            "holdout": make_records(2000, seed=2, **kw),
            "independent": make_records(2000, seed=3, **kw)}


@pytest.fixture(scope="module")
def leaky(sets: dict[str, pl.DataFrame]) -> EvaluationReport:
    return evaluate_release(sets["train"], sets["train"], holdout=sets["holdout"],
                            n_attacks=300, link_columns=LINK, seed=1)


@pytest.fixture(scope="module")
def independent(sets: dict[str, pl.DataFrame]) -> EvaluationReport:
    return evaluate_release(sets["train"], sets["independent"], holdout=sets["holdout"],
                            n_attacks=300, link_columns=LINK, seed=1)


def test_attacks_detect_a_synthesizer_that_copies_records(leaky: EvaluationReport) -> None:
    assert leaky.singling_out.ci_low > 0.5
    assert leaky.linkability.ci_low > 0.5
    assert leaky.inference["country"].ci_low > 0.5
    assert leaky.inference["quantity_t"].ci_low > 0.5
    assert leaky.dcr.median_synthetic_to_real == 0.0
    assert leaky.dcr.share_closer_to_real > 0.9
    assert leaky.quality.overall > 0.99


def test_attacks_find_no_risk_in_independent_data(independent: EvaluationReport) -> None:
    for est in (independent.singling_out, independent.linkability,
                *independent.inference.values()):
        assert est.ci_low <= 0.0 <= est.ci_high or abs(est.risk) < 0.1
        assert est.risk < 0.15
    assert 0.4 < independent.dcr.share_closer_to_real < 0.6
    assert independent.quality.overall > 0.8  # same generator: similar distributions


def test_risk_formula_and_interval() -> None:
    est = risk_from_counts(80, 20, 100)
    z = 1.959963984540054
    ra = (80 + z * z / 2) / (100 + z * z)
    rc = (20 + z * z / 2) / (100 + z * z)
    assert est.attack_rate == pytest.approx(ra)
    assert est.control_rate == pytest.approx(rc)
    assert est.risk == pytest.approx((ra - rc) / (1 - rc))
    assert est.ci_low < est.risk < est.ci_high
    assert risk_from_counts(30, 30, 100).risk == pytest.approx(0.0)
    wide, narrow = risk_from_counts(8, 2, 10), risk_from_counts(800, 200, 1000)
    assert wide.ci_high - wide.ci_low > narrow.ci_high - narrow.ci_low
    with pytest.raises(EvaluationError):
        risk_from_counts(0, 0, 0)


def _values(obj: object) -> list[object]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _values(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _values(x)]
    return [obj]


def test_released_report_holds_scores_not_rows(leaky: EvaluationReport,
                                               sets: dict[str, pl.DataFrame]) -> None:
    out = leaky.released(EvaluationPolicy(column_scores=True))
    json.dumps(out)
    values = _values(out)
    assert all(isinstance(v, int | float) for v in values)
    assert all(round(v, 2) == v for v in values if isinstance(v, float))
    real_numbers = set(sets["train"]["quantity_t"].drop_nulls().to_list())
    assert not real_numbers & {v for v in values if isinstance(v, float)}
    text = json.dumps(out)
    for code in ("COD", "cobalt", "2024-0", "site:"):  # no category value of any row
        assert code not in text
    # the report object itself holds only numbers, rates and column names
    for name, value in vars(leaky).items():
        assert not isinstance(value, pl.DataFrame | list), name


def test_policy_filters_what_leaves(leaky: EvaluationReport) -> None:
    none = leaky.released(EvaluationPolicy(quality=False, risks=False, dcr=False))
    assert none == {}
    scores_only = leaky.released(EvaluationPolicy(intervals=False, dcr=False, decimals=1))
    assert set(scores_only) == {"quality", "privacy_risk"}
    assert scores_only["privacy_risk"]["singling_out"] == {
        "risk": round(leaky.singling_out.risk, 1)}
    assert "columns" not in scores_only["quality"]
    full = leaky.released()
    lo, hi = full["privacy_risk"]["linkability"]["ci"]
    assert lo <= full["privacy_risk"]["linkability"]["risk"] <= hi
    with pytest.raises(EvaluationError):
        leaky.released(EvaluationPolicy(decimals=9))


def test_evaluation_refuses_bad_input(sets: dict[str, pl.DataFrame]) -> None:
    with pytest.raises(EvaluationError):
        evaluate_release(sets["train"], sets["train"].head(5), holdout=sets["holdout"])
    with pytest.raises(EvaluationError):
        evaluate_release(sets["train"], sets["train"], holdout=sets["holdout"],
                         secrets=("site_id",))
    assert math.isfinite(risk_from_counts(1, 0, 3).risk)
