"""Local facts about a node's data for its owner (never served to the coordinator)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from node._db import AgentStatusRow, ImportRow, RecordRow
from protocols import CoverageEntry

__all__ = ["DataSummary", "agent_status", "data_summary"]

_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
_IMPORTS = ImportRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DataSummary:
    """How many records and imports the node holds, and how many lie outside its coverage."""

    records: int
    imports: int
    outside_coverage: int


def data_summary(*, engine: Engine, coverage: Sequence[CoverageEntry]) -> DataSummary:
    """Count records, imports and records outside the declared coverage."""
    combos = select(_RECORDS.c.commodity, _RECORDS.c.stage, _RECORDS.c.flow,
                    _RECORDS.c.country, func.count()).group_by(
        _RECORDS.c.commodity, _RECORDS.c.stage, _RECORDS.c.flow, _RECORDS.c.country)
    with engine.connect() as connection:
        imports = int(connection.execute(select(func.count()).select_from(_IMPORTS)).scalar_one())
        rows = connection.execute(combos).fetchall()
        connection.rollback()
    total = outside = 0
    for commodity, stage, flow, country, count in rows:
        total += count
        if not any(e.covers(commodity=commodity, stage=stage, flow=flow, country=country)
                   for e in coverage):
            outside += count
    return DataSummary(records=total, imports=imports, outside_coverage=outside)


def agent_status(*, engine: Engine) -> AgentStatusRow | None:
    """The pull agent's last known connection state (``None`` if it never ran)."""
    with Session(engine) as session:
        return session.get(AgentStatusRow, 1)
