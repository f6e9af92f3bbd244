"""The coordinator's database: node registry, query history, every node's answer and
receipt, and the differencing guard's released contributor sets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Engine, Index, Text, event
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, create_engine

__all__ = [
    "CoordinatorTable",
    "EnrolmentTokenRow",
    "JobRow",
    "KeyRotationRow",
    "NodeRow",
    "NonceRow",
    "QueryRow",
    "ReceiptRow",
    "ReleasedSetRow",
    "create_schema",
    "make_engine",
    "utcnow",
]


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(UTC)


class CoordinatorTable(SQLModel, registry=registry()):
    """Base of the coordinator's tables (their own metadata, apart from the node's)."""


class NodeRow(CoordinatorTable, table=True):
    """An enrolled node. Pull nodes have no URL: the coordinator never connects to them."""

    __tablename__ = "nodes"

    node_id: str = Field(primary_key=True, max_length=63)
    display_name: str
    public_key: str
    key_id: str = Field(max_length=16)
    transport: str = "pull"  # pull | push (push: development only)
    url: str | None = None  # push only
    access_token: str | None = None  # push only: the node's bearer token
    active: bool = True
    enrolled_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    last_seen_at: datetime | None = None


class EnrolmentTokenRow(CoordinatorTable, table=True):
    """A one-time enrolment token (only its SHA-256 is stored)."""

    __tablename__ = "enrolment_tokens"

    token_sha256: str = Field(primary_key=True, max_length=64)
    node_id: str | None = Field(default=None, max_length=63)  # if bound to one node id
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None
    used_by: str | None = None


class QueryRow(CoordinatorTable, table=True):
    """A pooled query, its quorum and deadline, and (once finished) its pooled result."""

    __tablename__ = "queries"

    query_id: str = Field(primary_key=True, max_length=32)
    purpose: str
    requester: str = "operator"
    tier: str = "standardised"
    status: str  # queued | running | completed | failed
    quorum: int = 1
    deadline: datetime
    query_json: str = Field(sa_column=Column(Text, nullable=False))
    result_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    participants: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ReceiptRow(CoordinatorTable, table=True):
    """A node's signed receipt of one release (``protocols.Receipt``), kept for auditors."""

    __tablename__ = "receipts"

    node_id: str = Field(primary_key=True, max_length=63)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    query_id: str = Field(max_length=32, index=True)
    job_id: str | None = Field(default=None, max_length=32)
    entry_hash: str = Field(max_length=64)
    receipt_json: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(default_factory=utcnow)


class ReleasedSetRow(CoordinatorTable, table=True):
    """The set of nodes a published cell was pooled over (the differencing guard's memory)."""

    __tablename__ = "released_sets"
    __table_args__ = (Index("ix_released_sets_cell", "cell_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    cell_hash: str = Field(max_length=64)
    members_hash: str = Field(max_length=64)
    members: str = Field(sa_column=Column(Text, nullable=False))  # sorted, comma-separated
    query_id: str = Field(max_length=32)


class KeyRotationRow(CoordinatorTable, table=True):
    """A node's accepted key rotation: the key it replaced and the ``rotate_key`` envelope
    signed by that key (``protocols.KeyRotation``), handed to peers that pinned the old key."""

    __tablename__ = "key_rotations"

    id: int | None = Field(default=None, primary_key=True)
    node_id: str = Field(max_length=63, index=True)
    old_public_key: str = Field(max_length=100)
    new_public_key: str = Field(max_length=100)
    rotation_json: str = Field(sa_column=Column(Text, nullable=False))
    rotated_at: datetime = Field(default_factory=utcnow)


class JobRow(CoordinatorTable, table=True):
    """One node's part of a query: its state and, once answered, the signed answer."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_node_state", "node_id", "state"),)

    job_id: str = Field(primary_key=True, max_length=32)
    query_id: str = Field(foreign_key="queries.query_id", index=True, max_length=32)
    node_id: str = Field(max_length=63)
    state: str  # protocols.JobState
    message: str | None = None
    refusal_reason: str | None = None
    signed_answer_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class NonceRow(CoordinatorTable, table=True):
    """Nonces of accepted envelopes, kept for the replay window."""

    __tablename__ = "nonces"

    sender: str = Field(primary_key=True, max_length=63)
    nonce: str = Field(primary_key=True, max_length=32)
    stamped_at: datetime


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL mode, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_schema(*, engine: Engine) -> None:
    """Bring the coordinator's tables to the newest schema (Alembic, ``coordinator._schema``).

    Safe on every start: a database already up to date is only read; one created by the old
    ``create_all`` is stamped at the baseline and upgraded with its data.
    """
    from coordinator._schema import upgrade_to_head

    upgrade_to_head(engine)
