"""The coordinator's database: node registry, query history and every node's answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Engine, Text, event
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, create_engine

__all__ = [
    "AnswerRow",
    "CoordinatorTable",
    "NodeRow",
    "QueryRow",
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
    """An enrolled node."""

    __tablename__ = "nodes"

    node_id: str = Field(primary_key=True, max_length=63)
    display_name: str
    url: str
    public_key: str
    key_id: str = Field(max_length=16)
    access_token: str  # the node's bearer token; protect the database accordingly
    active: bool = True
    enrolled_at: datetime = Field(default_factory=utcnow)


class QueryRow(CoordinatorTable, table=True):
    """A pooled query and its pooled result."""

    __tablename__ = "queries"

    query_id: str = Field(primary_key=True, max_length=32)
    purpose: str
    status: str  # running | completed | failed
    query_json: str = Field(sa_column=Column(Text, nullable=False))
    result_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class AnswerRow(CoordinatorTable, table=True):
    """What one node answered to one query (the signed answer, or why there is none)."""

    __tablename__ = "answers"

    query_id: str = Field(primary_key=True, foreign_key="queries.query_id", max_length=32)
    node_id: str = Field(primary_key=True, max_length=63)
    status: str
    message: str | None = None
    signed_answer_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    received_at: datetime = Field(default_factory=utcnow)


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
    """Create the coordinator's tables if they do not exist."""
    CoordinatorTable.metadata.create_all(engine)
