"""The nodes' ledger receipts, kept beside the query history for auditors.

A receipt arrives with each answer and is checked there (:func:`coordinator._verify.
check_receipt`); this module stores it (once per node and ledger entry) and gives it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select
from sqlmodel import Session

from coordinator._db import ReceiptRow, utcnow
from protocols import Receipt

__all__ = ["ReceiptSummary", "node_receipts", "receipt_summary", "store_receipt"]

_RECEIPTS = ReceiptRow.__table__  # type: ignore[attr-defined]


def store_receipt(*, session: Session, job_id: str | None, receipt: Receipt | None) -> None:
    """Keep ``receipt`` (in the caller's transaction); a receipt already kept is left alone."""
    if receipt is None:
        return
    connection = session.connection()
    exists = connection.execute(select(_RECEIPTS.c.seq).where(
        _RECEIPTS.c.node_id == receipt.node_id, _RECEIPTS.c.seq == receipt.seq)).first()
    if exists is None:
        connection.execute(insert(_RECEIPTS).values(
            node_id=receipt.node_id, seq=receipt.seq, query_id=receipt.query_id,
            job_id=job_id, entry_hash=receipt.entry_hash,
            receipt_json=receipt.model_dump_json(), received_at=utcnow()))


def node_receipts(*, engine: Engine, node_id: str | None = None) -> list[Receipt]:
    """Receipts held, of one node or of all, in (node, ledger number) order."""
    stmt = select(_RECEIPTS.c.receipt_json).order_by(_RECEIPTS.c.node_id, _RECEIPTS.c.seq)
    if node_id is not None:
        stmt = stmt.where(_RECEIPTS.c.node_id == node_id)
    with engine.connect() as connection:
        rows = connection.execute(stmt).scalars().all()
        connection.rollback()
    return [Receipt.model_validate_json(text) for text in rows]


@dataclass(frozen=True)
class ReceiptSummary:
    """What the coordinator holds of one node's ledger."""

    node_id: str
    receipts: int
    last_seq: int
    last_received_at: datetime


def receipt_summary(*, engine: Engine) -> list[ReceiptSummary]:
    """Per node: how many receipts, the highest ledger number, when the last one came."""
    stmt = (select(_RECEIPTS.c.node_id, func.count(), func.max(_RECEIPTS.c.seq),
                   func.max(_RECEIPTS.c.received_at))
            .group_by(_RECEIPTS.c.node_id).order_by(_RECEIPTS.c.node_id))
    with engine.connect() as connection:
        rows = connection.execute(stmt).fetchall()
        connection.rollback()
    return [ReceiptSummary(str(n), int(c), int(s), r) for n, c, s, r in rows]
