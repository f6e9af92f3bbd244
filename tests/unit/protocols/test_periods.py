"""Periods: YYYY, YYYY-Qn, YYYY-MM; containment, overlap and the month index."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from protocols import InvalidPeriodError, Period, StandardError, parse_period


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", Period(2024)),
        ("2024-Q3", Period(2024, quarter=3)),
        ("2024-q3", Period(2024, quarter=3)),
        (" 2024-Q1 ", Period(2024, quarter=1)),
        ("2024-07", Period(2024, month=7)),
        ("2024-12", Period(2024, month=12)),
        ("2024-07-15", Period(2024, month=7)),
        ("2024-01-31", Period(2024, month=1)),
        ("2024.0", Period(2024)),
        (2024, Period(2024)),
        (2024.0, Period(2024)),
        (date(2024, 7, 15), Period(2024, month=7)),
        (datetime(2023, 2, 28, 23, 59), Period(2023, month=2)),
        ("1900", Period(1900)),
        ("2200-12", Period(2200, month=12)),
    ],
)
def test_parse_accepted_forms(value: object, expected: Period) -> None:
    assert parse_period(value) == expected


def test_parse_returns_a_period_unchanged() -> None:
    period = Period(2024, quarter=2)
    assert parse_period(period) is period


@pytest.mark.parametrize(
    "value",
    ["2024-13", "2024-00", "2024-Q5", "2024-Q0", "24", "2024-7", "2024-Q", "2024Q1",
     "2024-H1", "2024.5", "20244", "", "July 2024", "2024-07-15T00:00"],
)
def test_parse_refuses_malformed_periods(value: str) -> None:
    with pytest.raises(InvalidPeriodError) as exc_info:
        parse_period(value)
    assert str(exc_info.value) == (
        f"period {value!r} is not a period (expected YYYY, YYYY-Qn or YYYY-MM)"
    )


@pytest.mark.parametrize("value", ["1800", "1899", "2201", "1899-Q4"])
def test_parse_refuses_years_out_of_range(value: str) -> None:
    with pytest.raises(InvalidPeriodError) as exc_info:
        parse_period(value)
    assert str(exc_info.value) == f"period {value!r} has a year outside 1900-2200"


def test_the_error_names_the_field_and_is_a_standard_error() -> None:
    with pytest.raises(InvalidPeriodError) as exc_info:
        parse_period("2024-Q5", field="reporting_period")
    assert isinstance(exc_info.value, StandardError)
    assert isinstance(exc_info.value, ValueError)
    assert str(exc_info.value).startswith("reporting_period '2024-Q5' is not a period")


@pytest.mark.parametrize(
    ("period", "first", "last", "start", "granularity"),
    [
        (Period(2024), 1, 12, date(2024, 1, 1), "year"),
        (Period(2024, quarter=1), 1, 3, date(2024, 1, 1), "quarter"),
        (Period(2024, quarter=3), 7, 9, date(2024, 7, 1), "quarter"),
        (Period(2024, quarter=4), 10, 12, date(2024, 10, 1), "quarter"),
        (Period(2024, month=7), 7, 7, date(2024, 7, 1), "month"),
    ],
)
def test_first_and_last_month_start_and_granularity(
    period: Period, first: int, last: int, start: date, granularity: str
) -> None:
    assert period.first_month == first
    assert period.last_month == last
    assert period.start == start
    assert period.granularity == granularity


def test_month_index() -> None:
    # year * 12 + month - 1; 2024 * 12 = 24288
    assert Period(2024).month_index == (24288, 24299)
    assert Period(2024, quarter=3).month_index == (24294, 24296)
    assert Period(2024, month=7).month_index == (24294, 24294)
    assert Period(2023, month=12).month_index == (24287, 24287)
    assert Period(2024, month=1).month_index == (24288, 24288)


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("2024", "2024", True),
        ("2024", "2024-Q4", True),
        ("2024", "2024-01", True),
        ("2024", "2025-01", False),
        ("2024", "2023-12", False),
        ("2024-Q3", "2024-07", True),
        ("2024-Q3", "2024-09", True),
        ("2024-Q3", "2024-10", False),
        ("2024-Q3", "2024-06", False),
        ("2024-Q3", "2024", False),
        ("2024-07", "2024-Q3", False),
        ("2024-07", "2024-07", True),
    ],
)
def test_contains(outer: str, inner: str, expected: bool) -> None:
    assert parse_period(outer).contains(parse_period(inner)) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("2024", "2024-Q2", True),
        ("2024-Q2", "2024", True),
        ("2024-Q1", "2024-03", True),
        ("2024-Q1", "2024-04", False),
        ("2023", "2024", False),
        ("2023-12", "2024-01", False),
        ("2023-Q4", "2024-Q1", False),
        ("2024-06", "2024-06", True),
    ],
)
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert parse_period(a).overlaps(parse_period(b)) is expected
    assert parse_period(b).overlaps(parse_period(a)) is expected


@pytest.mark.parametrize(
    ("period", "expected"),
    [("2024", "2023"), ("2024-Q3", "2023-Q3"), ("2024-01", "2023-01"), ("1901-12", "1900-12")],
)
def test_previous_year(period: str, expected: str) -> None:
    assert parse_period(period).previous_year() == parse_period(expected)
    assert str(parse_period(period).previous_year()) == expected


@pytest.mark.parametrize(
    "text", ["1900", "2024", "2024-Q1", "2024-Q4", "2024-01", "2024-10", "2200-12"]
)
def test_str_round_trip(text: str) -> None:
    period = parse_period(text)
    assert str(period) == text
    assert parse_period(str(period)) == period


def test_str_is_canonical() -> None:
    assert str(Period(1999, month=3)) == "1999-03"
    assert str(Period(2024, quarter=2)) == "2024-Q2"
    assert str(parse_period("2024-q2")) == "2024-Q2"
    assert str(parse_period("2024-03-31")) == "2024-03"
    assert str(parse_period(2024.0)) == "2024"


def test_periods_are_frozen_and_hashable() -> None:
    assert len({Period(2024, month=7), parse_period("2024-07-01"), parse_period("2024-07")}) == 1
    with pytest.raises(AttributeError):
        Period(2024).year = 2025  # type: ignore[misc]
