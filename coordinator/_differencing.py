"""The coordinator's differencing ("jigsaw") guard (the rule is :mod:`protocols._differencing`).

Two checkpoints:

* :func:`check_submission` — before a query is queued: for every cell, the nodes it goes to
  must not differ from a set already published for the same cell definition by 1 or 2 nodes
  (else :class:`DifferencingRefusedError`, naming the nodes). Nodes apply the same rule to
  the ``participants`` list their job carries.
* :func:`guard_cells` — when the answers are pooled: a cell whose *actual* contributors (the
  nodes that answered and cover it, after refusals and dropouts) would isolate a company is
  suppressed with that reason; the contributor sets of published cells are remembered
  (:func:`remember_published`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlmodel import Session

from coordinator._db import ReleasedSetRow
from coordinator._errors import DifferencingRefusedError
from coordinator._models import CellStatus, PooledCell
from protocols import (
    AggregateQuery,
    NodeAnswer,
    cell_definitions,
    isolating_difference,
    members_hash,
)

__all__ = ["check_submission", "guard_cells", "remember_published"]

_SETS = ReleasedSetRow.__table__  # type: ignore[attr-defined]
_CHUNK = 500


def _released(session: Session, cells: Sequence[str]) -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    unique = list(dict.fromkeys(cells))
    for start in range(0, len(unique), _CHUNK):
        rows = session.connection().execute(
            select(_SETS.c.cell_hash, _SETS.c.members)
            .where(_SETS.c.cell_hash.in_(unique[start:start + _CHUNK]))).fetchall()
        for row in rows:
            found.setdefault(row.cell_hash, []).append(row.members.split(","))
    return found


def check_submission(*, session: Session, query: AggregateQuery,
                     participants: Sequence[str]) -> None:
    """Refuse ``query`` if any of its cells, pooled over ``participants``, could be
    differenced against a published figure of the same cell definition."""
    cells = cell_definitions(query)
    released = _released(session, cells)
    for cell in cells:
        found = isolating_difference(participants, released.get(cell, []))
        if found is not None:
            wanted, previous = found
            raise DifferencingRefusedError(
                "refused by the differencing guard: a cell of this query was published over "
                f"a set of nodes that differs from the nodes enrolled now only by "
                f"{', '.join(sorted(wanted ^ previous))}; subtracting the two would isolate "
                "them. Ask for a coarser cell, or wait until the set changes by at least 3.")


def guard_cells(*, session: Session, query: AggregateQuery, answers: Sequence[NodeAnswer],
                cells: list[PooledCell]) -> list[tuple[str, tuple[str, ...]]]:
    """Suppress published cells whose contributor set would allow differencing (in place);
    return ``(cell definition, contributors)`` of the cells that stay published."""
    published: list[tuple[str, tuple[str, ...]]] = []
    if not cells:  # the query failed: nothing is published
        return published
    definitions = cell_definitions(query)
    released = _released(session, definitions)
    for index, (key, cell) in enumerate(zip(query.public_keys(), cells, strict=True)):
        if cell.status is not CellStatus.PUBLISHED:
            continue
        members = tuple(sorted(a.node_id for a in answers if a.contributes(query, key)))
        if isolating_difference(members, released.get(definitions[index], [])) is not None:
            cells[index] = PooledCell(key=cell.key, status=CellStatus.SUPPRESSED,
                                      reason="differencing")
            continue
        published.append((definitions[index], members))
    return published


def remember_published(*, session: Session, query_id: str,
                       published: Sequence[tuple[str, tuple[str, ...]]]) -> None:
    """Record the contributor set of every published cell (new sets only)."""
    known = {(cell, tuple(m)) for cell, sets in
             _released(session, [c for c, _ in published]).items() for m in sets}
    rows = [{"cell_hash": cell, "members_hash": members_hash(members),
             "members": ",".join(members), "query_id": query_id}
            for cell, members in dict.fromkeys(published) if (cell, members) not in known]
    if rows:
        session.connection().execute(insert(_SETS), rows)
