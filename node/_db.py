"""The node's database: records, imports, privacy accounts, reservations, releases, ledger.

SQLite (a file in the node home) is the embedded default; PostgreSQL is the production store.
Every function that touches data takes keyword-only arguments.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, Index, Text, event
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, create_engine

__all__ = [
    "AgentStatusRow",
    "ContributorSetRow",
    "ImportRow",
    "JobRow",
    "LedgerEntryRow",
    "LedgerHeadRow",
    "NodeTable",
    "NonceRow",
    "PrivacyAccountRow",
    "RecordRow",
    "ReleaseRow",
    "ReservationRow",
    "create_schema",
    "make_engine",
    "utcnow",
]


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(UTC)


class NodeTable(SQLModel, registry=registry()):
    """Base of the node's tables (their own metadata, apart from the coordinator's)."""


class ImportRow(NodeTable, table=True):
    """One imported file. ``sha256`` makes re-importing the same file a no-op."""

    __tablename__ = "imports"

    id: int | None = Field(default=None, primary_key=True)
    file_name: str
    sha256: str = Field(index=True, unique=True, max_length=64)
    mapping_sha256: str = Field(max_length=64)
    row_count: int
    imported_at: datetime = Field(default_factory=utcnow)


class RecordRow(NodeTable, table=True):
    """One reporting record, as mapped and normalised. Never leaves the node."""

    __tablename__ = "records"
    __table_args__ = (Index("ix_records_query", "commodity", "flow", "year"),)

    id: int | None = Field(default=None, primary_key=True)
    import_id: int = Field(foreign_key="imports.id", index=True)
    record_id: str = Field(unique=True, max_length=128)
    period: str = Field(max_length=7)
    year: int
    first_month: int  # year * 12 + month - 1 of the period's first month
    last_month: int
    commodity: str = Field(max_length=32)
    stage: str = Field(max_length=32)
    flow: str = Field(max_length=32)
    country: str = Field(max_length=3)
    partner_country: str | None = Field(default=None, max_length=3)
    quantity: float | None = None
    unit: str | None = None
    basis: str | None = None
    grade: float | None = None
    price: float | None = None
    price_unit: str | None = None
    contract_type: str | None = None
    site_id: str | None = Field(default=None, max_length=128)
    contract_id: str | None = Field(default=None, max_length=128)
    quantity_t: float | None = None
    price_usd_t: float | None = None
    contribution_unit: str = Field(max_length=140)


class PrivacyAccountRow(NodeTable, table=True):
    """Privacy spent in one accounting year and data tier, reservations included.

    Exact integers of 1e-9 (see :class:`protocols.Spend`): pure-DP epsilon, zCDP rho, and the
    rho the pure releases are worth in zCDP. Rows are locked while a reservation is checked.
    """

    __tablename__ = "privacy_accounts"

    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    tier: str = Field(primary_key=True, max_length=32)
    epsilon_nano: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    rho_nano: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    pure_rho_nano: int = Field(default=0, sa_column=Column(BigInteger, nullable=False,
                                                           default=0))


class ReservationRow(NodeTable, table=True):
    """Budget reserved for one release before it is computed; settled when it is recorded.

    ``state``: ``reserved`` (computing) or ``settled`` (released: the spend stays); a
    reservation given back (nothing left the node) is deleted with its spend.
    """

    __tablename__ = "reservations"

    query_id: str = Field(primary_key=True, max_length=32)
    tier: str = Field(max_length=32)
    years: str
    epsilon_nano: int = Field(sa_column=Column(BigInteger, nullable=False))
    rho_nano: int = Field(sa_column=Column(BigInteger, nullable=False))
    pure_rho_nano: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None


class LedgerEntryRow(NodeTable, table=True):
    """One entry of the node's hash-chained, signed privacy ledger (``protocols.LedgerEntry``)."""

    __tablename__ = "ledger_entries"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    query_id: str = Field(max_length=32, unique=True)
    entry_hash: str = Field(max_length=64)
    entry_json: str = Field(sa_column=Column(Text, nullable=False))
    recorded_at: datetime


class LedgerHeadRow(NodeTable, table=True):
    """The ledger's last entry (one row): locked to append, so entries never fork."""

    __tablename__ = "ledger_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    entry_hash: str = Field(max_length=64)


class ContributorSetRow(NodeTable, table=True):
    """Which set of nodes a released cell was pooled over (the differencing guard's memory)."""

    __tablename__ = "contributor_sets"
    __table_args__ = (Index("ix_contributor_sets_cell", "cell_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    cell_hash: str = Field(max_length=64)
    members_hash: str = Field(max_length=64)
    members: str = Field(sa_column=Column(Text, nullable=False))  # sorted, comma-separated
    query_id: str = Field(max_length=32)


class ReleaseRow(NodeTable, table=True):
    """A release that left the node: what was charged and exactly what was sent."""

    __tablename__ = "releases"

    query_id: str = Field(primary_key=True, max_length=32)
    years: str  # comma-separated accounting years charged
    epsilon_nano: int = Field(sa_column=Column(BigInteger, nullable=False))
    kind: str
    purpose: str
    query_json: str = Field(sa_column=Column(Text, nullable=False))
    answer_json: str = Field(sa_column=Column(Text, nullable=False))
    released_at: datetime = Field(default_factory=utcnow)


class JobRow(NodeTable, table=True):
    """A job received from the coordinator, and what the node did with it.

    ``state`` follows :class:`protocols.JobState`; ``reported_state`` is the last state the
    coordinator has acknowledged (the agent reports until the two agree).
    """

    __tablename__ = "jobs"

    job_id: str = Field(primary_key=True, max_length=32)
    query_id: str = Field(index=True, max_length=32)
    state: str
    tier: str
    requester: str
    purpose: str
    kind: str
    epsilon: float
    years: str
    query_json: str = Field(sa_column=Column(Text, nullable=False))
    deadline: datetime
    received_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    approval: str = "automatic"  # automatic | manual
    decided_by: str | None = None
    outcome_reason: str | None = None  # refusals: query_refused | budget_exceeded | denied ...
    outcome_message: str | None = None
    reported_state: str | None = None
    participants: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class NonceRow(NodeTable, table=True):
    """Nonces of accepted envelopes from the coordinator, kept for the replay window."""

    __tablename__ = "nonces"

    sender: str = Field(primary_key=True, max_length=63)
    nonce: str = Field(primary_key=True, max_length=32)
    stamped_at: datetime


class AgentStatusRow(NodeTable, table=True):
    """The pull agent's connection to the coordinator (one row), for ``dpn node status``."""

    __tablename__ = "agent_status"

    id: int = Field(default=1, primary_key=True)
    coordinator_url: str
    connected: bool = False
    last_contact_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    next_retry_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``.

    For SQLite every transaction starts with ``BEGIN IMMEDIATE`` (the write lock is taken up
    front, so two releases can never interleave their budget checks), in WAL mode with a
    30-second busy timeout.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def create_schema(*, engine: Engine) -> None:
    """Bring the node's tables to the newest schema (Alembic migrations, see ``node._schema``).

    Safe on every start: a database already up to date is only read; one created by the old
    ``create_all`` is stamped at the baseline and upgraded with its data.
    """
    from node._schema import upgrade_to_head

    upgrade_to_head(engine)
