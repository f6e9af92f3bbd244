"""Property-based tests (Hypothesis) of periods, quantity normalisation and canonical JSON."""

from __future__ import annotations

import json
import string
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import (
    MASS_UNITS,
    Period,
    canonical_json,
    generate_private_key,
    normalise_quantity,
    parse_period,
    public_key_b64,
    sign,
    verify,
)

# Modest example counts keep this file to a few seconds; no example database is written.
FEW = settings(max_examples=150, deadline=None, database=None)


@st.composite
def periods(draw: st.DrawFn) -> Period:
    year = draw(st.integers(min_value=1900, max_value=2200))
    kind = draw(st.sampled_from(["year", "quarter", "month"]))
    if kind == "quarter":
        return Period(year, quarter=draw(st.integers(min_value=1, max_value=4)))
    if kind == "month":
        return Period(year, month=draw(st.integers(min_value=1, max_value=12)))
    return Period(year)


def months(period: Period) -> set[tuple[int, int]]:
    """The (year, month) pairs of a period, computed without month_index."""
    if period.month is not None:
        return {(period.year, period.month)}
    if period.quarter is not None:
        return {(period.year, m) for m in range(3 * period.quarter - 2, 3 * period.quarter + 1)}
    return {(period.year, m) for m in range(1, 13)}


@FEW
@given(periods())
def test_period_str_round_trip(period: Period) -> None:
    text = str(period)
    assert parse_period(text) == period
    assert str(parse_period(text)) == text
    assert parse_period(text.lower()) == period
    assert parse_period(f" {text} ") == period


@FEW
@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)))
def test_a_date_parses_to_its_month(day: date) -> None:
    assert parse_period(day) == Period(day.year, month=day.month)
    assert parse_period(day.isoformat()) == Period(day.year, month=day.month)


@FEW
@given(periods())
def test_month_index_spans_exactly_the_months_of_the_period(period: Period) -> None:
    indices = {year * 12 + month - 1 for year, month in months(period)}
    lo, hi = period.month_index
    assert (lo, hi) == (min(indices), max(indices))
    assert set(range(lo, hi + 1)) == indices


@FEW
@given(periods(), periods())
def test_contains_and_overlaps_agree_with_the_months(a: Period, b: Period) -> None:
    assert a.contains(b) is (months(b) <= months(a))
    assert a.overlaps(b) is bool(months(a) & months(b))
    assert a.overlaps(b) is b.overlaps(a)
    if a.contains(b):
        assert a.overlaps(b)
        assert a.previous_year().contains(b.previous_year())


_quantities = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
_grades = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)
_units = st.sampled_from(sorted(MASS_UNITS))


@FEW
@given(_quantities, st.floats(min_value=0.0, max_value=1e3), _units, st.none() | _grades)
def test_normalise_quantity_is_linear_and_never_negative(
    quantity: float, factor: float, unit: str, grade: float | None
) -> None:
    basis = "contained" if grade is None else "gross"
    tonnes = normalise_quantity(quantity, unit, basis, grade)
    assert tonnes >= 0.0
    scaled = normalise_quantity(quantity * factor, unit, basis, grade)
    assert scaled >= 0.0
    assert scaled == pytest.approx(factor * tonnes, rel=1e-9, abs=1e-300)
    if grade is not None:
        assert tonnes <= normalise_quantity(quantity, unit, "contained", None)


@FEW
@given(_quantities, _quantities, _units, st.none() | _grades)
def test_normalise_quantity_is_additive(
    q1: float, q2: float, unit: str, grade: float | None
) -> None:
    basis = "contained" if grade is None else "gross"
    whole = normalise_quantity(q1 + q2, unit, basis, grade)
    parts = normalise_quantity(q1, unit, basis, grade) + normalise_quantity(q2, unit, basis, grade)
    assert whole == pytest.approx(parts, rel=1e-9, abs=1e-300)


# An explicit alphabet (with non-ASCII, quotes, backslashes and control characters) keeps
# Hypothesis from building and caching its Unicode tables on disk.
_text = st.text(alphabet=string.printable + "éßø€中–\u2028\x00\x1f\"\\", max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)
_objects = st.dictionaries(_text, _json, max_size=6)


@FEW
@given(_objects)
def test_canonical_json_survives_a_json_round_trip(payload: dict[str, Any]) -> None:
    canonical = canonical_json(payload)
    assert canonical_json(json.loads(json.dumps(payload))) == canonical
    assert canonical_json(json.loads(canonical)) == canonical
    assert json.loads(canonical) == payload


@FEW
@given(_objects)
def test_canonical_json_ignores_key_order(payload: dict[str, Any]) -> None:
    assert canonical_json(dict(reversed(list(payload.items())))) == canonical_json(payload)


_KEY = generate_private_key()


@settings(max_examples=40, deadline=None, database=None)
@given(_objects)
def test_signatures_verify_after_a_json_round_trip(payload: dict[str, Any]) -> None:
    signature = sign(_KEY, payload)
    verify(public_key_b64(_KEY), json.loads(json.dumps(payload)), signature)
