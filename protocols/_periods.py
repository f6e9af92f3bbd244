"""Reporting periods: a year (``2024``), a quarter (``2024-Q3``) or a month (``2024-07``).

The accounting period of the privacy budget is the calendar year of a record's period.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from protocols._errors import InvalidPeriodError

__all__ = ["Period", "parse_period"]

_PATTERN = re.compile(r"^(?P<year>\d{4})(?:-(?:Q(?P<quarter>[1-4])|(?P<month>0[1-9]|1[0-2])))?$")
_MIN_YEAR, _MAX_YEAR = 1900, 2200


@dataclass(frozen=True)
class Period:
    """A calendar year, quarter or month; ``str(period)`` is its canonical form."""

    year: int
    quarter: int | None = None
    month: int | None = None

    @property
    def first_month(self) -> int:
        """Month number (1-12) in which the period starts."""
        if self.month is not None:
            return self.month
        if self.quarter is not None:
            return 3 * (self.quarter - 1) + 1
        return 1

    @property
    def last_month(self) -> int:
        """Month number (1-12) in which the period ends."""
        if self.month is not None:
            return self.month
        if self.quarter is not None:
            return 3 * self.quarter
        return 12

    @property
    def start(self) -> date:
        """First day of the period."""
        return date(self.year, self.first_month, 1)

    @property
    def month_index(self) -> tuple[int, int]:
        """(first, last) months as ``year * 12 + month - 1``: a total order on months."""
        base = self.year * 12 - 1
        return base + self.first_month, base + self.last_month

    @property
    def sort_key(self) -> tuple[int, int]:
        """Order periods by first month, then by length (``sorted(ps, key=Period.sort_key)``)."""
        lo, hi = self.month_index
        return lo, hi

    @property
    def granularity(self) -> str:
        """``"year"``, ``"quarter"`` or ``"month"``."""
        if self.month is not None:
            return "month"
        return "quarter" if self.quarter is not None else "year"

    def contains(self, other: Period) -> bool:
        """Whether ``other`` lies entirely within this period."""
        lo, hi = self.month_index
        olo, ohi = other.month_index
        return lo <= olo and ohi <= hi

    def overlaps(self, other: Period) -> bool:
        """Whether the two periods share at least one month."""
        lo, hi = self.month_index
        olo, ohi = other.month_index
        return lo <= ohi and olo <= hi

    def previous_year(self) -> Period:
        """The same period one year earlier."""
        return Period(self.year - 1, self.quarter, self.month)

    def __str__(self) -> str:
        if self.month is not None:
            return f"{self.year:04d}-{self.month:02d}"
        if self.quarter is not None:
            return f"{self.year:04d}-Q{self.quarter}"
        return f"{self.year:04d}"


def parse_period(value: object, *, field: str = "period") -> Period:
    """Parse ``YYYY``, ``YYYY-Qn`` or ``YYYY-MM`` (also accepts ``YYYY-MM-DD`` dates and integers).

    Raises :class:`InvalidPeriodError` naming the field and the accepted forms.
    """
    if isinstance(value, Period):
        return value
    if isinstance(value, date):
        return Period(value.year, month=value.month)
    text = str(value).strip().upper()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):  # a date: its month
        text = text[:7]
    if re.fullmatch(r"\d{4}\.0", text):  # a year read as float from a spreadsheet
        text = text[:4]
    match = _PATTERN.match(text)
    if match is None:
        raise InvalidPeriodError(
            f"{field} {value!r} is not a period (expected YYYY, YYYY-Qn or YYYY-MM)"
        )
    year = int(match["year"])
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise InvalidPeriodError(f"{field} {value!r} has a year outside {_MIN_YEAR}-{_MAX_YEAR}")
    quarter = int(match["quarter"]) if match["quarter"] else None
    month = int(match["month"]) if match["month"] else None
    return Period(year, quarter, month)
