"""The node's privacy budget: epsilon per accounting (calendar) year, kept in the database.

Amounts are stored as integer nano-epsilon so that sums are exact. A charge is one
conditional ``UPDATE ... SET spent = spent + x WHERE spent + x <= total`` per year, inside the
release's transaction: on PostgreSQL a concurrent charge of the same year waits for the row
lock and re-checks the condition; on SQLite the transaction holds the write lock from
``BEGIN IMMEDIATE``. Either way two concurrent releases can never overspend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from node._db import BudgetAccount
from node._errors import BudgetExceededError

__all__ = [
    "NANO",
    "BudgetStatus",
    "budget_status",
    "charge_budget",
    "ensure_accounts",
    "to_nano",
]

NANO = 1_000_000_000
_ACCOUNTS = BudgetAccount.__table__  # type: ignore[attr-defined]


def to_nano(epsilon: float) -> int:
    """Epsilon in nano-epsilon, rounded up (a charge is never under-counted)."""
    return math.ceil(epsilon * NANO - 1e-6)


@dataclass(frozen=True)
class BudgetStatus:
    """Budget of one accounting year."""

    year: int
    total: float
    spent: float

    @property
    def remaining(self) -> float:
        """Epsilon still available this year."""
        return max(0.0, self.total - self.spent)


def ensure_accounts(*, connection: Connection, years: list[int]) -> None:
    """Create missing budget rows (spent 0) for ``years``; harmless if they exist."""
    for year in years:
        values = {"year": year, "spent_nano": 0}
        if connection.dialect.name == "postgresql":
            connection.execute(pg_insert(_ACCOUNTS).values(values).on_conflict_do_nothing())
        else:
            connection.execute(insert(_ACCOUNTS).values(values).prefix_with("OR IGNORE"))


def _spent(connection: Connection, years: list[int]) -> dict[int, int]:
    rows = connection.execute(
        select(_ACCOUNTS.c.year, _ACCOUNTS.c.spent_nano).where(_ACCOUNTS.c.year.in_(years))
    )
    spent = {year: 0 for year in years}
    spent.update({int(year): int(nano) for year, nano in rows})
    return spent


def charge_budget(
    *, connection: Connection, years: list[int], epsilon: float, epsilon_per_year: float
) -> None:
    """Charge ``epsilon`` to every year in ``years`` within the caller's transaction.

    Raises :class:`BudgetExceededError` (requested vs remaining per year) if any year lacks
    budget; the caller's transaction must then be rolled back, which undoes partial charges.
    """
    amount, total = to_nano(epsilon), to_nano(epsilon_per_year)
    ensure_accounts(connection=connection, years=years)
    for year in sorted(years):  # a fixed order: no deadlock between concurrent charges
        result = connection.execute(
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.year == year, _ACCOUNTS.c.spent_nano + amount <= total)
            .values(spent_nano=_ACCOUNTS.c.spent_nano + amount)
        )
        if result.rowcount != 1:
            spent = _spent(connection, years)
            raise BudgetExceededError(
                requested=epsilon,
                remaining={y: max(0, total - s) / NANO for y, s in spent.items()},
            )


def budget_status(*, engine: Engine, epsilon_per_year: float, years: list[int] | None = None
                  ) -> list[BudgetStatus]:
    """Budget per year: the given ``years``, or every year charged so far."""
    with engine.connect() as connection:
        if years is None:
            rows = connection.execute(select(_ACCOUNTS.c.year, _ACCOUNTS.c.spent_nano))
            spent = {int(y): int(s) for y, s in rows}
        else:
            spent = _spent(connection, years)
        connection.rollback()
    return [
        BudgetStatus(year=y, total=epsilon_per_year, spent=s / NANO)
        for y, s in sorted(spent.items())
    ]
