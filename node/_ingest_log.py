"""The trace of every import tried: imported, refused, already there, or failed.

:func:`node._ingest.ingest_file` records one :class:`IngestAttemptRow` per call, in a
transaction of its own *after* the import's atomic transaction has committed or rolled back:
a refused import still changes none of the node's data, and leaves a trace of why (the first
:data:`MAX_RECORDED_ERRORS` problems: file, row, field, reason; ``error_count`` says how many
there were in all). Recording is best effort: if the trace cannot be written, the import's
own outcome stands and a warning is logged.

``dpn node imports`` and the node's admin page read the trace with :func:`list_attempts`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Column, Engine, Text, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field

from node._db import NodeTable, utcnow
from node._errors import IngestProblem

__all__ = [
    "MAX_RECORDED_ERRORS",
    "OUTCOMES",
    "AttemptRecorder",
    "IngestAttempt",
    "IngestAttemptRow",
    "Outcome",
    "list_attempts",
    "record_attempt",
]

log = logging.getLogger("node.ingest")

#: Problems kept per attempt (the rest are counted in ``error_count`` only).
MAX_RECORDED_ERRORS = 100
Outcome = Literal["imported", "rejected", "duplicate", "failed"]
#: ``imported``: stored; ``rejected``: refused with problems, nothing stored; ``duplicate``:
#: the same file (same SHA-256) was imported before; ``failed``: an unexpected error.
OUTCOMES: tuple[Outcome, ...] = ("imported", "rejected", "duplicate", "failed")


class IngestAttemptRow(NodeTable, table=True):
    """One call of ``ingest_file`` and its outcome (migration ``0002``)."""

    __tablename__ = "ingest_attempts"

    id: int | None = Field(default=None, primary_key=True)
    file_name: str
    sha256: str | None = Field(default=None, max_length=64)  # None: the file was not read
    mapping_sha256: str | None = Field(default=None, max_length=64)
    started_at: datetime
    finished_at: datetime
    outcome: str = Field(max_length=16)
    row_count: int = 0  # imported: records stored; rejected: data rows checked
    error_count: int = 0
    errors_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    import_id: int | None = None  # imported or duplicate: the import that holds the file


@dataclass(frozen=True)
class IngestAttempt:
    """An attempt as read back, its problems decoded."""

    id: int
    file_name: str
    sha256: str | None
    mapping_sha256: str | None
    started_at: datetime
    finished_at: datetime
    outcome: str
    row_count: int
    error_count: int
    errors: list[IngestProblem]
    import_id: int | None

    @property
    def errors_truncated(self) -> bool:
        """True when more problems were found than were kept."""
        return self.error_count > len(self.errors)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (``dpn node imports --json``)."""
        return {
            "id": self.id,
            "file_name": self.file_name,
            "sha256": self.sha256,
            "mapping_sha256": self.mapping_sha256,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "outcome": self.outcome,
            "row_count": self.row_count,
            "error_count": self.error_count,
            "errors": [_problem_json(p) for p in self.errors],
            "import_id": self.import_id,
        }


def _problem_json(problem: IngestProblem) -> dict[str, Any]:
    return {"file": problem.file, "row": problem.row, "field": problem.field,
            "reason": problem.reason}


def _aware(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone: they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _table() -> Any:
    return IngestAttemptRow.__table__  # type: ignore[attr-defined]


def record_attempt(
    *,
    engine: Engine,
    file_name: str,
    outcome: Outcome,
    started_at: datetime,
    finished_at: datetime | None = None,
    sha256: str | None = None,
    mapping_sha256: str | None = None,
    row_count: int = 0,
    problems: Sequence[IngestProblem] = (),
    import_id: int | None = None,
) -> int | None:
    """Store one attempt in its own transaction; return its id (``None`` if it could not be).

    Only the first :data:`MAX_RECORDED_ERRORS` problems are kept; ``error_count`` is all.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown ingest outcome {outcome!r}")
    kept = [_problem_json(p) for p in problems[:MAX_RECORDED_ERRORS]]
    values = {
        "file_name": file_name,
        "sha256": sha256,
        "mapping_sha256": mapping_sha256,
        "started_at": started_at,
        "finished_at": finished_at or utcnow(),
        "outcome": outcome,
        "row_count": row_count,
        "error_count": len(problems),
        "errors_json": json.dumps(kept, ensure_ascii=False),
        "import_id": import_id,
    }
    try:
        with engine.begin() as conn:
            key = conn.execute(insert(_table()).values(**values)).inserted_primary_key
    except SQLAlchemyError as exc:  # the trace must never change the import's outcome
        log.warning("could not record the ingest attempt of %s (%s): %s", file_name, outcome,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    return None if key is None else int(key[0])


def list_attempts(
    *, engine: Engine, limit: int = 50, outcome: str | None = None
) -> list[IngestAttempt]:
    """The most recent attempts first (at most ``limit``), optionally of one outcome only."""
    table = _table()
    query = select(table).order_by(table.c.id.desc()).limit(limit)
    if outcome is not None:
        query = query.where(table.c.outcome == outcome)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
        conn.rollback()
    return [
        IngestAttempt(
            id=row["id"],
            file_name=row["file_name"],
            sha256=row["sha256"],
            mapping_sha256=row["mapping_sha256"],
            started_at=_aware(row["started_at"]),
            finished_at=_aware(row["finished_at"]),
            outcome=row["outcome"],
            row_count=row["row_count"],
            error_count=row["error_count"],
            errors=[IngestProblem(e["file"], e["row"], e["field"], e["reason"])
                    for e in json.loads(row["errors_json"])],
            import_id=row["import_id"],
        )
        for row in rows
    ]


@dataclass
class AttemptRecorder:
    """What ``ingest_file`` learns as it goes, written once when it ends (see module doc)."""

    engine: Engine
    file_name: str
    mapping_sha256: str | None = None
    sha256: str | None = None
    row_count: int = 0
    started_at: datetime = field(default_factory=utcnow)

    def _record(self, outcome: Outcome, *, problems: Sequence[IngestProblem] = (),
                import_id: int | None = None, row_count: int | None = None) -> int | None:
        return record_attempt(
            engine=self.engine, file_name=self.file_name, outcome=outcome,
            started_at=self.started_at, sha256=self.sha256,
            mapping_sha256=self.mapping_sha256,
            row_count=self.row_count if row_count is None else row_count,
            problems=problems, import_id=import_id)

    def imported(self, *, rows: int, import_id: int, duplicate: bool) -> int | None:
        """The file was stored now (``rows`` records), or before (``duplicate``)."""
        if duplicate:
            return self._record("duplicate", import_id=import_id, row_count=0)
        return self._record("imported", import_id=import_id, row_count=rows)

    def rejected(self, problems: Sequence[IngestProblem]) -> int | None:
        """The file was refused for ``problems``; nothing was stored."""
        return self._record("rejected", problems=problems)

    def failed(self, exc: BaseException) -> int | None:
        """An unexpected error ended the import (nothing was stored: it was atomic)."""
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        return self._record("failed", problems=[IngestProblem(self.file_name, None, None,
                                                              reason)])
