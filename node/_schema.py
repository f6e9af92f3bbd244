"""The node's schema under Alembic: upgrade to the newest revision, safely and at once.

``create_schema`` (in :mod:`node._db`) calls :func:`upgrade_to_head`:

* a database already at the newest revision is left alone (one read, no lock, no DDL);
* an empty database gets every migration from the baseline;
* a database created by the old ``create_all`` (tables present, no version table) is
  *stamped* at the baseline first, then upgraded: its data stays;
* on PostgreSQL the upgrade holds a transaction-scoped advisory lock and its DDL is
  transactional, so two services starting together never both migrate; on SQLite the write
  lock of the migrating transaction does the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

__all__ = [
    "BASELINE",
    "VERSION_TABLE",
    "current_revision",
    "head_revision",
    "include_object",
    "upgrade_to_head",
]

VERSION_TABLE = "alembic_version_node"
BASELINE = "0001"
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x64706E_0D  # pg_advisory_xact_lock key: "dpn" + node
# Tables of the baseline: their presence without a version table means "created by create_all".
_BASELINE_TABLES = frozenset({"imports", "records", "budget_accounts", "releases", "jobs",
                              "nonces", "agent_status"})


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """Autogenerate filter: ignore tables that are not the node's (e.g. version tables)."""
    return not (type_ == "table" and name is not None and name.startswith("alembic_version"))


def alembic_config(connection: Connection | None = None) -> Config:
    """A programmatic Alembic configuration (no ini file), optionally bound to a connection."""
    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("version_locations", str(_MIGRATIONS / "versions"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (``None``: never migrated).

    A plain read (no Alembic context, which logs two lines each time): readiness probes call it.
    """
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608
                                  ).scalars().all()
    return ",".join(sorted(versions)) or None


def upgrade_to_head(engine: Engine) -> str:
    """Bring the database to :func:`head_revision`; return the revision it is at."""
    head = head_revision()
    with engine.connect() as connection:
        at = current_revision(connection)
        connection.rollback()
    if at == head:
        return head
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        at = current_revision(connection)  # another process may have migrated meanwhile
        if at is None and set(inspect(connection).get_table_names()) >= _BASELINE_TABLES:
            command.stamp(alembic_config(connection), BASELINE)
        command.upgrade(alembic_config(connection), "head")
    return head
