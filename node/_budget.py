"""The node's privacy accountant: reserve before computing, settle when released, kept in the
database per accounting (calendar) year and data tier.

Arithmetic is :mod:`protocols._accounting`'s (exact integer nano-units; pure DP added
exactly, zCDP converted at the policy's ``delta``), so the auditor who recomputes spend from
the ledger gets the same totals.

Life of a release::

    reserve(query)   one transaction: lock the year's accounts, check every limit with the
                     new cost added, add it, write a ``reserved`` reservation
    compute          outside any transaction (the DP computation may take long)
    settle(query)    in the transaction that records the release and its ledger entry:
                     ``reserved`` -> ``settled`` (the spend stays)
    void(query)      nothing left the node (refused, failed, crashed): the spend is given
                     back and the reservation deleted (the query id may be asked again)

A crash between reserve and settle leaves a ``reserved`` row: it still counts as spent (never
under-counted) until :func:`recover_reservations` gives it back: when the node service
starts (every reservation then open belongs to a process that is gone or to a release that
cannot be settled any more), and while it runs, every ``reservation_sweep_seconds``, for
reservations older than ``reservation_timeout_seconds`` (longer than any computation
takes). Giving back is safe because the release a reservation stood for was never recorded
(release, ledger entry and settlement share one transaction), so nothing left the node;
and if that computation is still running somewhere, its settlement is refused (``reserved``
is required) and it releases nothing. Nothing is ever counted twice: a query id
has one reservation (primary key), settled or given back only once by conditional updates.

Concurrency: on PostgreSQL the year's account rows are locked ``FOR UPDATE`` in a fixed order,
so concurrent reservations are checked one after the other; on SQLite every transaction holds
the write lock from ``BEGIN IMMEDIATE``. Either way the budget is never overspent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from node._db import PrivacyAccountRow, ReleaseRow, ReservationRow, utcnow
from node._errors import BudgetExceededError, NodeError
from protocols import NANO, BudgetLimit, PrivacyCost, Spend, guarantee

__all__ = [
    "RESERVATION_TIMEOUT",
    "BudgetStatus",
    "ReservationLostError",
    "account_spend",
    "budget_status",
    "recover_reservations",
    "reserve",
    "settle",
    "void",
]

#: A reservation older than this with no recorded release is given back by
#: :func:`recover_reservations` (the longest computation, a synthetic fit, takes minutes).
RESERVATION_TIMEOUT = timedelta(hours=1)
_ACCOUNTS = PrivacyAccountRow.__table__  # type: ignore[attr-defined]
_RESERVATIONS = ReservationRow.__table__  # type: ignore[attr-defined]
_RELEASES = ReleaseRow.__table__  # type: ignore[attr-defined]


class ReservationLostError(NodeError):
    """The reservation of a release was voided before it could be settled: not released."""


@dataclass(frozen=True)
class BudgetStatus:
    """Budget of one accounting year, all tiers together.

    ``spent`` is the proven epsilon at ``delta``; ``remaining`` the largest epsilon one more
    pure-DP release may cost. While only pure releases were made they add up to ``total``;
    once zCDP composition is the tighter bound, ``remaining`` can exceed ``total - spent``
    (:meth:`protocols.BudgetLimit.remaining`).
    """

    year: int
    total: float
    spent: float
    delta: float = 0.0
    remaining: float = 0.0


def _ensure_accounts(connection: Connection, years: list[int], tier: str) -> None:
    for year in years:
        values = {"year": year, "tier": tier, "epsilon_nano": 0, "rho_nano": 0,
                  "pure_rho_nano": 0}
        if connection.dialect.name == "postgresql":
            connection.execute(pg_insert(_ACCOUNTS).values(values).on_conflict_do_nothing())
        else:
            connection.execute(insert(_ACCOUNTS).values(values).prefix_with("OR IGNORE"))


def _spend_of(row: object) -> Spend:
    return Spend(epsilon_nano=int(row.epsilon_nano), rho_nano=int(row.rho_nano),  # type: ignore[attr-defined]
                 pure_rho_nano=int(row.pure_rho_nano))  # type: ignore[attr-defined]


def _locked_spend(connection: Connection, years: list[int]) -> dict[int, dict[str, Spend]]:
    """Spend per year and tier, rows locked against concurrent reservations (PostgreSQL)."""
    stmt = (select(_ACCOUNTS).where(_ACCOUNTS.c.year.in_(years))
            .order_by(_ACCOUNTS.c.year, _ACCOUNTS.c.tier))
    if connection.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    spend: dict[int, dict[str, Spend]] = {year: {} for year in years}
    for row in connection.execute(stmt):
        spend[int(row.year)][str(row.tier)] = _spend_of(row)
    return spend


def _in_scope(spend_by_tier: Mapping[str, Spend], scope: str) -> Spend:
    total = Spend()
    for tier, spend in spend_by_tier.items():
        if scope in ("all", tier):
            total = total + spend
    return total


def reserve(*, connection: Connection, query_id: str, tier: str, years: list[int],
            cost: PrivacyCost, limits: Mapping[str, BudgetLimit]) -> None:
    """Reserve ``cost`` in every year of ``years`` for ``tier``, within the caller's transaction.

    ``limits`` maps ``"all"`` (every tier together) and optionally a tier to its yearly
    :class:`~protocols.BudgetLimit`. Raises :class:`BudgetExceededError` (requested vs
    remaining per year) if any limit would be exceeded; the caller's transaction must then be
    rolled back. Raises ``IntegrityError`` if ``query_id`` already has a reservation.
    """
    years = sorted(set(years))
    _ensure_accounts(connection, years, tier)
    current = _locked_spend(connection, years)
    added = Spend.of(cost)
    over = [year for year in years for scope, limit in limits.items()
            if scope in ("all", tier) and not limit.admits(_in_scope(current[year], scope) + added)]
    if over:
        raise BudgetExceededError(
            requested=cost,
            remaining={year: _remaining(current[year], limits, tier) for year in years})
    for year in years:
        connection.execute(
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.year == year, _ACCOUNTS.c.tier == tier)
            .values(epsilon_nano=_ACCOUNTS.c.epsilon_nano + added.epsilon_nano,
                    rho_nano=_ACCOUNTS.c.rho_nano + added.rho_nano,
                    pure_rho_nano=_ACCOUNTS.c.pure_rho_nano + added.pure_rho_nano))
    connection.execute(insert(_RESERVATIONS).values(
        query_id=query_id, tier=tier, years=",".join(str(y) for y in years),
        epsilon_nano=added.epsilon_nano, rho_nano=added.rho_nano,
        pure_rho_nano=added.pure_rho_nano, state="reserved", created_at=utcnow()))


def _remaining(spend_by_tier: Mapping[str, Spend], limits: Mapping[str, BudgetLimit],
               tier: str) -> float:
    return min(limit.remaining(_in_scope(spend_by_tier, scope))
               for scope, limit in limits.items() if scope in ("all", tier))


def settle(*, connection: Connection, query_id: str) -> None:
    """Mark the reservation spent, in the transaction that records the release.

    Raises :class:`ReservationLostError` if it is not ``reserved`` any more (voided by
    recovery): the caller must roll back and not release.
    """
    result = connection.execute(
        update(_RESERVATIONS)
        .where(_RESERVATIONS.c.query_id == query_id, _RESERVATIONS.c.state == "reserved")
        .values(state="settled", closed_at=utcnow()))
    if result.rowcount != 1:
        raise ReservationLostError(
            f"the budget reservation of query {query_id} was given back before the release "
            "was recorded (it took longer than the reservation timeout); nothing was "
            "released: ask again")


def void(*, connection: Connection, query_id: str) -> bool:
    """Give a ``reserved`` reservation back (nothing was released); ``False`` if none."""
    row = connection.execute(
        select(_RESERVATIONS).where(_RESERVATIONS.c.query_id == query_id,
                                    _RESERVATIONS.c.state == "reserved")).first()
    if row is None:
        return False
    # The row goes: a voided reservation leaves no trace, so the query id may be asked again.
    result = connection.execute(
        _RESERVATIONS.delete().where(_RESERVATIONS.c.query_id == query_id,
                                     _RESERVATIONS.c.state == "reserved"))
    if result.rowcount != 1:
        return False
    for year in (int(y) for y in row.years.split(",") if y):
        connection.execute(
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.year == year, _ACCOUNTS.c.tier == row.tier)
            .values(epsilon_nano=_ACCOUNTS.c.epsilon_nano - row.epsilon_nano,
                    rho_nano=_ACCOUNTS.c.rho_nano - row.rho_nano,
                    pure_rho_nano=_ACCOUNTS.c.pure_rho_nano - row.pure_rho_nano))
    return True


def recover_reservations(*, engine: Engine, now: datetime | None = None,
                         older_than: timedelta = RESERVATION_TIMEOUT) -> int:
    """Give back reservations with no recorded release, older than ``older_than``; how many.

    The node service calls it at start with ``older_than=timedelta(0)``: every open
    reservation then is left by a process that is gone (see the module docstring).
    """
    cutoff = (now or utcnow()) - older_than
    with engine.begin() as connection:
        stale = connection.execute(
            select(_RESERVATIONS.c.query_id)
            .select_from(_RESERVATIONS.outerjoin(
                _RELEASES, _RELEASES.c.query_id == _RESERVATIONS.c.query_id))
            .where(and_(_RESERVATIONS.c.state == "reserved",
                        _RESERVATIONS.c.created_at < cutoff,
                        _RELEASES.c.query_id.is_(None)))).scalars().all()
        return sum(void(connection=connection, query_id=q) for q in stale)


def account_spend(*, engine: Engine) -> dict[tuple[int, str], Spend]:
    """Spend per (year, tier) as the accounts hold it (settled and reserved)."""
    with engine.connect() as connection:
        rows = connection.execute(select(_ACCOUNTS)).fetchall()
        connection.rollback()
    return {(int(r.year), str(r.tier)): _spend_of(r) for r in rows}


def budget_status(*, engine: Engine, epsilon_per_year: float, years: list[int] | None = None,
                  delta: float = 1e-6) -> list[BudgetStatus]:
    """Budget per year, all tiers together: the given ``years``, or every year charged.

    ``spent`` is the proven epsilon at ``delta`` (:func:`protocols.guarantee`): the sum of
    epsilons while only pure-DP releases were made.
    """
    by_year: dict[int, Spend] = {year: Spend() for year in years or []}
    for (year, _tier), spend in account_spend(engine=engine).items():
        if years is None or year in by_year:
            by_year[year] = by_year.get(year, Spend()) + spend
    limit = BudgetLimit(epsilon=epsilon_per_year, delta=delta)
    return [BudgetStatus(year=year, total=epsilon_per_year,
                         spent=round(guarantee(spend, delta=delta), 9), delta=delta,
                         remaining=limit.remaining(spend))
            for year, spend in sorted(by_year.items())]


assert NANO == 1_000_000_000  # the accounts' unit; changing it needs a migration
