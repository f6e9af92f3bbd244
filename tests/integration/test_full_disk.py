"""A node whose disk is full: its home (SQLite database and all) on a small tmpfs, filled up.

An import and a release then fail cleanly: a clear message and a non-zero exit (no
traceback), nothing imported, nothing released, nothing charged, no ledger entry. Once the
disk has room again, the same import and the same release succeed, each charged once.

The release is tried with every amount of free space from 4 KiB to 160 KiB (8 KiB steps):
with the least, SQLite cannot even open the database (``disk I/O error``); with more, a
write fails (``database or disk is full``); somewhere in between the reservation of the
budget is committed and the settlement is not, so the reservation must be given back on a
full disk (the window this test must hit, or it fails).

Needs root (``mount -t tmpfs``); without it the test fails, it is not skipped.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

import node
import node._releasing
from crimmis_dpn.cli import app
from node._budget import settle as real_settle
from node._db import RecordRow, ReleaseRow
from protocols import AggregateQuery, CoverageEntry
from tests.unit.node.conftest import SIMPLE_MAPPING, insert_records, make_record

pytestmark = pytest.mark.processes

runner = CliRunner()
DISK_BYTES = 16 * 1024 * 1024
COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"], flows=["production"],
                          countries=["COD"])]
ROWS = 3000
DISK_ERROR = re.compile(r"disk is full|disk may be full", re.IGNORECASE)
EPSILON = 0.1


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test only; unmounted whatever happens."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700",
                              "tmpfs", str(mount_point)], capture_output=True, text=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (needs root and "
                    f"`mount -t tmpfs`): {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        gc.collect()  # engines the failed CLI calls left open (a process would have exited)
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, *, leave: int) -> Path:
    """Fill ``disk`` with one file so that ``leave`` bytes stay free; the file's path."""
    stats = os.statvfs(disk)
    size = stats.f_bavail * stats.f_frsize - leave
    filler = disk / "filler"
    with filler.open("wb") as handle:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            size -= handle.write(chunk[:size])
    stats = os.statvfs(disk)
    assert stats.f_bavail * stats.f_frsize == leave
    return filler


def aggregate_query(query_id: str | None = None) -> AggregateQuery:
    return AggregateQuery.model_validate({
        "query_id": query_id or uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD"],
        "group_by": ["country"], "epsilon": EPSILON,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 1000.0}, "purpose": "full disk"})


def state(home: Path) -> dict[str, Any]:
    """What a release changes: raw spend, ledger entries, release rows, records (own engine)."""
    context = node.open_node(home)
    try:
        with context.engine.connect() as conn:
            releases = conn.execute(select(ReleaseRow.query_id)).scalars().all()
            records = conn.execute(select(func.count()).select_from(RecordRow)).scalar_one()
        return {
            "epsilon_nano": sum(s.epsilon_nano for s in
                                node.account_spend(engine=context.engine).values()),
            "spent": {b.year: b.spent for b in node.budget_status(
                engine=context.engine, epsilon_per_year=context.policy.budget.epsilon_per_year)
                if b.spent},
            "ledger": [e.query_id for e in node.ledger_entries(engine=context.engine)],
            "releases": sorted(releases), "records": records}
    finally:
        context.engine.dispose()


def released_once(disk: Path) -> Path:
    """A node home on ``disk`` with 60 records and one release (the year's account exists)."""
    home = disk / "node"
    context = node.init_node(home=home, node_id="acme", display_name="Acme",
                             policy=node.Policy(coverage=COVERAGE))
    insert_records(context, [make_record(f"r{i}", period=f"2024-{i % 12 + 1:02d}",
                                         quantity_t=10.0, unit=f"site:{i % 7}")
                             for i in range(60)])
    node.answer_query(context=context, query=aggregate_query())
    context.engine.dispose()
    return home


def clean_failure(output: str) -> None:
    """The disk is named as the cause, what to do is said, and no traceback is shown."""
    text = " ".join(output.split())  # the console wraps long lines
    assert DISK_ERROR.search(text) and "free space on the disk" in text, output
    assert "Traceback" not in output and 'File "' not in output, output


def test_an_import_on_a_full_disk_fails_cleanly_and_succeeds_once_there_is_room(
    disk: Path, tmp_path: Path,
) -> None:
    home = disk / "node"
    context = node.init_node(home=home, node_id="acme", display_name="Acme",
                             policy=node.Policy(coverage=COVERAGE))
    context.engine.dispose()
    mapping = tmp_path / "map.toml"
    mapping.write_text(SIMPLE_MAPPING, encoding="utf-8")
    data = tmp_path / "exports.csv"
    data.write_text("id,month,commodity,flow,country,qty,unit\n" + "".join(
        f"R{i},2024-{i % 12 + 1:02d},cobalt,production,COD,{i % 97 + 1},t\n"
        for i in range(ROWS)), encoding="utf-8")
    args = ["node", "ingest", str(data), "--mapping", str(mapping), "--home", str(home)]
    assert state(home)["records"] == 0

    # A few KiB left: SQLite cannot open the database; 64 KiB: it opens, the write fails.
    for leave in (4096, 64 * 1024):
        filler = fill(disk, leave=leave)
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (leave, result.output, result.exception)
        assert isinstance(result.exception, SystemExit), result.exception  # no crash
        clean_failure(result.output)
        filler.unlink()
        assert state(home)["records"] == 0, leave  # nothing imported

    # The real command line, on a full disk: the same clean message, no traceback.
    filler = fill(disk, leave=64 * 1024)
    process = subprocess.run([sys.executable, "-m", "crimmis_dpn", *args], capture_output=True,
                             text=True, check=False, timeout=120,
                             env={**os.environ, "COLUMNS": "200"})
    filler.unlink()
    assert process.returncode == 1, process.stdout + process.stderr
    clean_failure(process.stdout + process.stderr)
    assert state(home)["records"] == 0

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"imported {ROWS:,} records" in result.output
    assert state(home)["records"] == ROWS


def test_a_release_on_a_full_disk_charges_nothing_and_succeeds_once_there_is_room(
    disk: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = released_once(disk)
    settled: list[str] = []  # query ids whose settlement ran (their reservation committed)

    def spy_settle(**kwargs: Any) -> None:
        settled.append(kwargs["query_id"])
        real_settle(**kwargs)

    monkeypatch.setattr(node._releasing, "settle", spy_settle)
    outcomes: dict[str, int] = {"io_error": 0, "disk_full": 0, "reserved_then_failed": 0,
                                "released": 0}
    for leave in range(4096, 160 * 1024 + 1, 8192):
        before = state(home)
        query = aggregate_query()
        filler = fill(disk, leave=leave)
        context = node.open_node(home)
        try:
            try:
                answer = node.answer_query(context=context, query=query)
            except OperationalError as exc:
                answer = None
                message = str(exc.orig)
                assert message in ("disk I/O error", "database or disk is full"), message
                outcomes["io_error" if "I/O" in message else "disk_full"] += 1
                outcomes["reserved_then_failed"] += query.query_id in settled
        finally:
            context.engine.dispose()
            filler.unlink()
        after = state(home)
        if answer is not None:  # there was room enough: released and charged once
            outcomes["released"] += 1
            assert answer.answer.query_id == query.query_id
            assert after["epsilon_nano"] - before["epsilon_nano"] == round(EPSILON * 1e9)
            assert after["ledger"] == [*before["ledger"], query.query_id]
            continue
        # Failed: nothing charged (read once the disk has room), no ledger entry, no release.
        assert after == before, (leave, before, after)

        context = node.open_node(home)  # the same release, with room: released, charged once
        try:
            again = node.answer_query(context=context, query=query)
        finally:
            context.engine.dispose()
        assert again.answer.query_id == query.query_id and again.receipt is not None
        done = state(home)
        assert done["epsilon_nano"] - before["epsilon_nano"] == round(EPSILON * 1e9)
        assert done["ledger"] == [*before["ledger"], query.query_id]
        assert done["releases"] == sorted([*before["releases"], query.query_id])

    print(f"\nfull disk, release with 4-160 KiB free: {outcomes}")
    assert outcomes["io_error"] >= 1 and outcomes["disk_full"] >= 1, outcomes
    assert outcomes["reserved_then_failed"] >= 1, outcomes  # the give-back path was tested
    assert outcomes["released"] >= 1, outcomes



def test_a_push_release_on_a_full_disk_answers_507_and_charges_nothing(disk: Path) -> None:
    home = released_once(disk)
    token = node.load_settings(home).access_token.get_secret_value()

    statuses: list[int] = []
    for leave in range(4096, 160 * 1024 + 1, 8192):
        before = state(home)
        query = aggregate_query()
        context = node.open_node(home)
        try:  # the service is running when its disk fills up
            with TestClient(node.create_app(context, run_agent=False),
                            raise_server_exceptions=False) as client:
                filler = fill(disk, leave=leave)
                try:
                    response = client.post("/v1/queries", json=query.model_dump(mode="json"),
                                           headers={"Authorization": f"Bearer {token}"})
                finally:
                    filler.unlink()
        finally:
            context.engine.dispose()
        statuses.append(response.status_code)
        after = state(home)
        if response.status_code == 200:
            assert after["ledger"] == [*before["ledger"], query.query_id]
            continue
        assert response.status_code == 507, (leave, response.status_code, response.text)
        body = response.json()
        assert body["error"] == "insufficient_storage", body
        assert DISK_ERROR.search(body["message"]) and "free space" in body["message"], body
        assert "Traceback" not in response.text
        assert after == before, (leave, before, after)  # nothing released or charged

    print(f"\nfull disk, push release with 4-160 KiB free: statuses {statuses}")
    assert 507 in statuses and 200 in statuses, statuses
