"""The node's Alembic migrations, on SQLite and PostgreSQL.

* an empty database is migrated to the head, which matches the models exactly;
* a database made by the old ``create_all`` (no version table) is stamped and upgraded with
  every row kept;
* a populated database at the baseline keeps its data through every later revision;
* services starting together migrate once.

The budget and releases tables are what auditors rely on: they must survive every upgrade.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text

import node._ingest_log  # noqa: F401  (the ingest_attempts table of revision 0002)
from node._db import NodeTable, create_schema, make_engine
from node._schema import (
    BASELINE,
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    include_object,
    upgrade_to_head,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _populate(engine: Engine) -> None:
    """Rows in every baseline table, with baseline columns only."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO imports (id, file_name, sha256, mapping_sha256, row_count, imported_at) "
            "VALUES (1, 'exports.csv', :h, :m, 1, :now)"), {"h": "a" * 64, "m": "b" * 64,
                                                            "now": NOW})
        conn.execute(text(
            "INSERT INTO records (id, import_id, record_id, period, year, first_month, "
            "last_month, commodity, stage, flow, country, quantity, unit, quantity_t, "
            "contribution_unit) VALUES (1, 1, 'r1', '2024-01', 2024, 24288, 24288, 'cobalt', "
            "'mining', 'production', 'COD', 120.5, 't', 120.5, 'site:a')"))
        conn.execute(text("INSERT INTO budget_accounts (year, spent_nano) VALUES "
                          "(2024, 1500000000), (2025, 250000000)"))
        conn.execute(text(
            "INSERT INTO releases (query_id, years, epsilon_nano, kind, purpose, query_json, "
            "answer_json, released_at) VALUES ('q1', '2024', 1500000000, 'sum', 'balance', "
            "'{}', '{\"cells\": []}', :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO jobs (job_id, query_id, state, tier, requester, purpose, kind, epsilon, "
            "years, query_json, deadline, received_at, updated_at, approval) VALUES ('j1', "
            "'q1', 'answered', 'standardised', 'operator', 'balance', 'sum', 1.5, '2024', '{}', "
            ":now, :now, :now, 'automatic')"), {"now": NOW})
        conn.execute(text("INSERT INTO nonces (sender, nonce, stamped_at) "
                          "VALUES ('coordinator', 'n1', :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO agent_status (id, coordinator_url, connected, consecutive_failures, "
            "updated_at) VALUES (1, 'https://pool.example', :f, 2, :now)"),
            {"f": False, "now": NOW})


def _assert_populated(engine: Engine) -> None:
    with engine.connect() as conn:
        _assert_budget_kept(conn)
        assert conn.execute(text("SELECT query_id, epsilon_nano, answer_json FROM releases")
                            ).all() == [("q1", 1_500_000_000, '{"cells": []}')]
        assert conn.execute(text("SELECT record_id, quantity_t, import_id FROM records")
                            ).all() == [("r1", 120.5, 1)]
        assert conn.execute(text("SELECT job_id, state, epsilon FROM jobs")).all() == [
            ("j1", "answered", 1.5)]
        assert conn.execute(text("SELECT consecutive_failures FROM agent_status")
                            ).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM imports")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM nonces")).scalar_one() == 1
        conn.rollback()


def _assert_budget_kept(conn: Connection) -> None:
    """The spend of the populated rows, in whichever budget table the revision has."""
    if inspect(conn).has_table("privacy_accounts"):  # revision 0003 and later
        assert conn.execute(text(
            "SELECT year, tier, epsilon_nano, rho_nano FROM privacy_accounts ORDER BY year")
        ).all() == [(2024, "standardised", 1_500_000_000, 0),
                    (2025, "standardised", 250_000_000, 0)]
    else:
        assert conn.execute(text("SELECT year, spent_nano FROM budget_accounts ORDER BY year")
                            ).all() == [(2024, 1_500_000_000), (2025, 250_000_000)]


def _baseline_without_version_table(engine: Engine) -> None:
    """What the code before migrations left: the baseline tables and no version table."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))


def test_empty_database_is_migrated_to_head_matching_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    create_schema(engine=engine)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        context = MigrationContext.configure(conn, opts={
            "version_table": VERSION_TABLE, "include_object": include_object,
            "compare_type": True})
        assert compare_metadata(context, NodeTable.metadata) == []
    engine.dispose()


def test_database_of_create_all_is_stamped_and_keeps_its_data(database_url: str) -> None:
    engine = make_engine(database_url)
    _baseline_without_version_table(engine)
    _populate(engine)
    assert VERSION_TABLE not in inspect(engine).get_table_names()
    create_schema(engine=engine)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    _assert_populated(engine)
    create_schema(engine=engine)  # a second start changes nothing
    _assert_populated(engine)
    engine.dispose()


def test_populated_baseline_keeps_its_data_through_every_revision(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
    _populate(engine)
    assert upgrade_to_head(engine) == head_revision()
    _assert_populated(engine)
    engine.dispose()


def test_services_starting_together_migrate_once(postgres_url: str) -> None:
    engines = [make_engine(postgres_url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine: Engine) -> None:
        try:
            create_schema(engine=engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engines[0].connect() as conn:
        assert current_revision(conn) == head_revision()
    for e in engines:
        e.dispose()


def test_revision_0002_adds_the_ingest_attempts_table_and_removes_it_on_downgrade(
        database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
    _populate(engine)
    assert "ingest_attempts" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
    columns = {c["name"]: c for c in inspect(engine).get_columns("ingest_attempts")}
    assert set(columns) == {"id", "file_name", "sha256", "mapping_sha256", "started_at",
                            "finished_at", "outcome", "row_count", "error_count",
                            "errors_json", "import_id"}
    assert columns["sha256"]["nullable"] and columns["import_id"]["nullable"]
    assert not columns["outcome"]["nullable"]
    _assert_populated(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), BASELINE)
    assert "ingest_attempts" not in inspect(engine).get_table_names()
    _assert_populated(engine)
    engine.dispose()


def test_revision_0003_carries_the_budget_into_privacy_accounts_and_back(
        database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
    _populate(engine)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
    tables = set(inspect(engine).get_table_names())
    assert {"privacy_accounts", "reservations", "ledger_entries", "ledger_head",
            "contributor_sets"} <= tables
    assert "budget_accounts" not in tables
    with engine.connect() as conn:
        # q1 (1.5 in 2024) explains 2024 exactly: its zCDP worth is 1.5**2 / 2; the 0.25 of
        # 2025 that no release explains is kept, counted as one release.
        assert conn.execute(text("SELECT year, pure_rho_nano FROM privacy_accounts "
                                 "ORDER BY year")).all() == [(2024, 1_125_000_000),
                                                             (2025, 31_250_000)]
        conn.rollback()
    _assert_populated(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    assert "privacy_accounts" not in inspect(engine).get_table_names()
    _assert_populated(engine)
    engine.dispose()
