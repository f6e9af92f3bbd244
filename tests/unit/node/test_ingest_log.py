"""The ingest log: every import attempt leaves a trace, refused ones with their problems.

The trace is written in its own transaction after the import's: a refused import still
changes none of the node's data, and a trace that cannot be written never changes the
import's outcome.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

import node._ingest as ingest_module
from node import IngestError, Mapping, create_schema, ingest_file, load_mapping, make_engine
from node._db import NodeTable, utcnow
from node._ingest_log import (
    MAX_RECORDED_ERRORS,
    IngestAttempt,
    list_attempts,
    record_attempt,
)

HEADER = ["TxnRef", "Month", "Product", "Movement", "Site country", "Qty", "UoM"]
MAPPING_TOML = """\
[columns]
record_id = "TxnRef"
period = "Month"
commodity = "Product"
flow = "Movement"
country = "Site country"
quantity = "Qty"
unit = "UoM"

[constants]
stage = "mining"
basis = "contained"
"""


def _row(n: int, quantity: str = "5") -> list[str]:
    return [f"TX-{n}", "2024-08", "cobalt", "production", "COD", quantity, "t"]


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture
def mapping(tmp_path: Path) -> Mapping:
    path = tmp_path / "acme.toml"
    path.write_text(MAPPING_TOML, encoding="utf-8")
    return load_mapping(path)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """On SQLite, then on PostgreSQL."""
    engine = make_engine(database_url)
    create_schema(engine=engine)
    yield engine
    engine.dispose()


def _records(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(
            NodeTable.metadata.tables["records"])).scalar_one())


def _only(engine: Engine) -> IngestAttempt:
    attempts = list_attempts(engine=engine)
    assert len(attempts) == 1
    return attempts[0]


def test_an_import_is_recorded_with_its_hashes_rows_and_import(
        tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    before = utcnow()
    path = _csv(tmp_path / "aug.csv", [_row(1), _row(2), _row(3)])
    report = ingest_file(engine=engine, path=path, mapping=mapping)
    attempt = _only(engine)
    assert (attempt.file_name, attempt.outcome, attempt.row_count, attempt.import_id) == (
        "aug.csv", "imported", 3, report.import_id)
    assert attempt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert attempt.mapping_sha256 == mapping.mapping_sha256
    assert (attempt.error_count, attempt.errors) == (0, [])
    assert before - timedelta(seconds=1) <= attempt.started_at <= attempt.finished_at
    assert attempt.finished_at <= utcnow()


def test_a_refused_import_changes_nothing_and_keeps_its_problems(
        tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    rows = [_row(n) for n in range(1, 11)]
    rows[3][5], rows[6][5] = "-5", "lots"
    rows.insert(5, [""] * len(HEADER))  # a blank row is not a data row
    path = _csv(tmp_path / "bad.csv", rows)
    with pytest.raises(IngestError) as info:
        ingest_file(engine=engine, path=path, mapping=mapping)
    assert _records(engine) == 0
    attempt = _only(engine)
    assert (attempt.outcome, attempt.import_id, attempt.row_count) == ("rejected", None, 10)
    assert attempt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert attempt.errors == info.value.problems
    assert [(p.file, p.row, p.field) for p in attempt.errors] == [
        ("bad.csv", 5, "quantity"), ("bad.csv", 9, "quantity")]
    assert "negative" in attempt.errors[0].reason
    assert attempt.error_count == 2 and not attempt.errors_truncated

    rows[3][5], rows[7][5] = "5", "5"  # fixed: the file goes in and both attempts remain
    ingest_file(engine=engine, path=_csv(tmp_path / "bad.csv", rows), mapping=mapping)
    assert [a.outcome for a in list_attempts(engine=engine)] == ["imported", "rejected"]
    assert _records(engine) == 10


def test_only_the_first_problems_are_kept_but_all_are_counted(
        tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    total = MAX_RECORDED_ERRORS + 25
    path = _csv(tmp_path / "worse.csv", [_row(n, quantity="-1") for n in range(total)])
    with pytest.raises(IngestError) as info:
        ingest_file(engine=engine, path=path, mapping=mapping)
    attempt = _only(engine)
    assert attempt.error_count == len(info.value.problems) == total
    assert attempt.errors == info.value.problems[:MAX_RECORDED_ERRORS]
    assert attempt.errors_truncated
    assert attempt.to_json()["errors"][0] == {
        "file": "worse.csv", "row": 2, "field": "quantity",
        "reason": info.value.problems[0].reason}


def test_a_file_that_cannot_be_read_is_recorded_without_a_hash(
        tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    with pytest.raises(IngestError):
        ingest_file(engine=engine, path=tmp_path / "missing.csv", mapping=mapping)
    attempt = _only(engine)
    assert (attempt.outcome, attempt.sha256, attempt.row_count) == ("rejected", None, 0)
    assert attempt.errors[0].row is None and "not found" in attempt.errors[0].reason


def test_a_second_import_of_the_same_file_is_recorded_as_duplicate(
        tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    path = _csv(tmp_path / "aug.csv", [_row(1)])
    first = ingest_file(engine=engine, path=path, mapping=mapping)
    ingest_file(engine=engine, path=path, mapping=mapping)
    newest, oldest = list_attempts(engine=engine)
    assert (newest.outcome, newest.import_id, newest.row_count) == (
        "duplicate", first.import_id, 0)
    assert newest.sha256 == oldest.sha256 and oldest.outcome == "imported"


def test_an_unexpected_error_is_recorded_as_failed_and_still_raised(
        tmp_path: Path, engine: Engine, mapping: Mapping,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_store(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("disk full\nmore detail")

    monkeypatch.setattr(ingest_module, "_store", broken_store)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_file(engine=engine, path=_csv(tmp_path / "aug.csv", [_row(1), _row(2)]),
                    mapping=mapping)
    attempt = _only(engine)
    assert (attempt.outcome, attempt.row_count, attempt.import_id) == ("failed", 2, None)
    assert [(p.row, p.field, p.reason) for p in attempt.errors] == [
        (None, None, "RuntimeError: disk full")]
    assert _records(engine) == 0


def test_a_trace_that_cannot_be_written_does_not_change_the_outcome(
        tmp_path: Path, sqlite_url: str, mapping: Mapping,
        caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(sqlite_url)
    create_schema(engine=engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE ingest_attempts"))
    with caplog.at_level(logging.WARNING, logger="node.ingest"):
        report = ingest_file(engine=engine, path=_csv(tmp_path / "aug.csv", [_row(1)]),
                             mapping=mapping)
    assert report.rows_imported == 1 and _records(engine) == 1
    assert "could not record the ingest attempt of aug.csv (imported)" in caplog.text
    engine.dispose()


def test_listing_is_newest_first_filtered_and_limited(engine: Engine) -> None:
    start = utcnow()
    for n, outcome in enumerate(["imported", "rejected", "duplicate", "rejected", "failed"]):
        assert record_attempt(engine=engine, file_name=f"f{n}.csv", outcome=outcome,
                              started_at=start) is not None
    assert [a.file_name for a in list_attempts(engine=engine)] == [
        "f4.csv", "f3.csv", "f2.csv", "f1.csv", "f0.csv"]
    assert [a.file_name for a in list_attempts(engine=engine, outcome="rejected")] == [
        "f3.csv", "f1.csv"]
    assert [a.file_name for a in list_attempts(engine=engine, limit=2)] == ["f4.csv", "f3.csv"]
    with pytest.raises(ValueError, match="unknown ingest outcome"):
        record_attempt(engine=engine, file_name="x", outcome="lost",  # type: ignore[arg-type]
                       started_at=start)
