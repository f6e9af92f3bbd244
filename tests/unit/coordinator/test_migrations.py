"""The coordinator's Alembic migrations, on SQLite and PostgreSQL.

* an empty database is migrated to the head, which matches the models exactly;
* a database made by the old ``create_all`` (no version table) is stamped and upgraded with
  every row kept;
* a populated database at the baseline keeps its data through every later revision;
* services starting together migrate once.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from coordinator._db import CoordinatorTable, create_schema, make_engine
from coordinator._schema import (
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
            "INSERT INTO nodes (node_id, display_name, public_key, key_id, transport, active, "
            "enrolled_at) VALUES ('acme-mining', 'Acme', 'PUBKEY', '1a2b3c4d5e6f7a8b', 'pull', "
            ":t, :now)"), {"t": True, "now": NOW})
        conn.execute(text(
            "INSERT INTO enrolment_tokens (token_sha256, node_id, created_at, expires_at) "
            "VALUES (:h, 'acme-mining', :now, :exp)"),
            {"h": "a" * 64, "now": NOW, "exp": NOW + timedelta(hours=72)})
        conn.execute(text(
            "INSERT INTO queries (query_id, purpose, requester, tier, status, quorum, deadline, "
            "query_json, result_json, created_at) VALUES ('q1', 'balance', 'operator', "
            "'standardised', 'completed', 3, :now, '{\"kind\": \"sum\"}', '{\"cells\": []}', "
            ":now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO jobs (job_id, query_id, node_id, state, created_at, updated_at) "
            "VALUES ('j1', 'q1', 'acme-mining', 'answered', :now, :now)"), {"now": NOW})
        conn.execute(text("INSERT INTO nonces (sender, nonce, stamped_at) "
                          "VALUES ('acme-mining', 'n1', :now)"), {"now": NOW})


def _assert_populated(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT display_name, key_id FROM nodes")).all() == [
            ("Acme", "1a2b3c4d5e6f7a8b")]
        assert conn.execute(text("SELECT status, quorum, result_json FROM queries")).all() == [
            ("completed", 3, '{"cells": []}')]
        assert conn.execute(text("SELECT job_id, state FROM jobs")).all() == [("j1", "answered")]
        assert conn.execute(text("SELECT count(*) FROM enrolment_tokens")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM nonces")).scalar_one() == 1
        enrolled = conn.execute(text("SELECT enrolled_at FROM nodes")).scalar_one()
    if isinstance(enrolled, datetime):
        assert enrolled.replace(tzinfo=enrolled.tzinfo or UTC) == NOW


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
        assert compare_metadata(context, CoordinatorTable.metadata) == []
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
