"""What the coordinator gives auditors: receipts, the figures each node contributed to, and a
verification of a node's exported ledger against both (:func:`protocols.audit_node`).

Read-only: nothing here writes to the database, and the auditor credential reaches nothing
else that does (see ``coordinator._api``).
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator._db import JobRow, NodeRow, QueryRow, utcnow
from coordinator._receipts import node_receipts
from protocols import AuditReport, JobState, LedgerExport, audit_node

__all__ = ["published_figures", "verify_ledger"]


def published_figures(*, engine: Engine, node_id: str) -> dict[str, str]:
    """Query id -> purpose of every completed query whose result used this node's answer."""
    with Session(engine) as session:
        rows = session.exec(
            select(QueryRow.query_id, QueryRow.purpose)
            .join(JobRow, col(JobRow.query_id) == col(QueryRow.query_id))
            .where(JobRow.node_id == node_id, JobRow.state == str(JobState.ANSWERED),
                   QueryRow.status == "completed")).all()
    return {query_id: purpose for query_id, purpose in rows}


def verify_ledger(*, engine: Engine, ledger: LedgerExport) -> AuditReport:
    """Audit a node's exported ledger against this coordinator's receipts and figures.

    The node's current key comes from the registry, not from the export; keys of earlier
    key ids (before a rotation) are taken from the export.
    """
    with Session(engine) as session:
        node = session.get(NodeRow, ledger.node_id)
    keys = dict(ledger.public_keys)
    if node is not None:
        keys[node.key_id] = node.public_key
    return audit_node(ledger, node_receipts(engine=engine, node_id=ledger.node_id),
                      now=utcnow(), published=published_figures(engine=engine,
                                                                node_id=ledger.node_id),
                      public_keys=keys)
