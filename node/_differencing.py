"""The node's own differencing guard (the rule is :mod:`protocols._differencing`'s).

For every cell of a query that this node covers (where its own value could be isolated), the
node remembers the set of nodes the query was sent to (``JobSpec.participants``), and refuses
a later query whose set for the same cell definition differs from a remembered one by 1 or 2
nodes. The coordinator applies the same rule with declared coverage; the node's copy protects
it even from a coordinator that does not. It relies on the coordinator telling the truth about
``participants`` (a coordinator that lies is beyond any rule a node can check alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from node._db import ContributorSetRow
from node._errors import QueryRefusedError
from protocols import (
    AggregateQuery,
    CoverageEntry,
    cell_definitions,
    covers_slice,
    isolating_difference,
    members_hash,
)

__all__ = ["GuardedCells", "check_differencing", "remember_cells"]

_SETS = ContributorSetRow.__table__  # type: ignore[attr-defined]
_CHUNK = 500


@dataclass(frozen=True)
class GuardedCells:
    """The cells of one query this node covers, with the set they are pooled over."""

    cell_hashes: tuple[str, ...]
    members: tuple[str, ...]


def _covered_cells(query: AggregateQuery, coverage: Sequence[CoverageEntry]) -> list[str]:
    covered = []
    for key, digest in zip(query.public_keys(), cell_definitions(query), strict=True):
        cell = query.cell_slice(key)
        if covers_slice(coverage, commodities=cell["commodities"] or [],
                        stages=cell["stages"] or [], flows=cell["flows"] or [],
                        countries=cell["countries"]):
            covered.append(digest)
    return covered


def check_differencing(*, connection: Connection, query: AggregateQuery,
                       coverage: Sequence[CoverageEntry], participants: Sequence[str] | None
                       ) -> GuardedCells | None:
    """Raise :class:`QueryRefusedError` if answering would allow differencing; else return
    the cells to remember once the release is recorded (``None``: no participants given)."""
    if participants is None:
        return None
    members = tuple(sorted(set(participants)))
    cells = _covered_cells(query, coverage)
    for start in range(0, len(cells), _CHUNK):
        chunk = cells[start:start + _CHUNK]
        rows = connection.execute(select(_SETS.c.cell_hash, _SETS.c.members)
                                  .where(_SETS.c.cell_hash.in_(chunk))).fetchall()
        found = isolating_difference(members, [r.members.split(",") for r in rows])
        if found is not None:
            wanted, previous = found
            differ = sorted(wanted ^ previous)
            raise QueryRefusedError(
                f"refused by the differencing guard: a cell of this query was already "
                f"released over a set of nodes that differs from this one only by "
                f"{', '.join(differ)}; subtracting the two would isolate them",
                rule="differencing")
    return GuardedCells(tuple(cells), members)


def remember_cells(*, connection: Connection, guarded: GuardedCells | None,
                   query_id: str) -> None:
    """Record the contributor set of every guarded cell (in the release's transaction)."""
    if guarded is None or not guarded.cell_hashes:
        return
    digest = members_hash(guarded.members)
    known: set[str] = set()
    for start in range(0, len(guarded.cell_hashes), _CHUNK):
        chunk = list(guarded.cell_hashes[start:start + _CHUNK])
        known |= set(connection.execute(
            select(_SETS.c.cell_hash).where(_SETS.c.cell_hash.in_(chunk),
                                            _SETS.c.members_hash == digest)).scalars())
    rows = [{"cell_hash": cell, "members_hash": digest, "members": ",".join(guarded.members),
             "query_id": query_id} for cell in dict.fromkeys(guarded.cell_hashes)
            if cell not in known]
    if rows:
        connection.execute(insert(_SETS), rows)
