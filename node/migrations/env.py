"""Alembic environment of the node. Runs inside ``node._schema`` (which passes an open
connection in ``config.attributes["connection"]``) or from the ``alembic`` command."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

import node._ingest_log  # noqa: F401  (its table belongs to the node's metadata)
from node._db import NodeTable
from node._schema import VERSION_TABLE, include_object

config = context.config
target_metadata = NodeTable.metadata


def _configure(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move instead
        compare_type=True,
    )


def run() -> None:
    """Online migrations only (the services need a live database)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "DPN_NODE_DATABASE_URL")
    if not url:
        raise SystemExit("set DPN_NODE_DATABASE_URL or pass -x url=...")
    engine = create_engine(url)
    with engine.connect() as live:
        _configure(live)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
