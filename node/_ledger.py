"""The node's privacy ledger: append (inside the release's transaction), read, export.

Format and verification are :mod:`protocols._ledger`'s. The ledger is appended to in the
same transaction as the release row and the budget settlement, so the ledger, the accounts
and what left the node can never disagree: either all three are recorded or none. The single
``ledger_head`` row is locked while appending, so two releases never claim the same number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from node._db import LedgerEntryRow, LedgerHeadRow, utcnow
from node._home import NodeContext
from protocols import (
    GENESIS_HASH,
    DataTier,
    LedgerEntry,
    LedgerExport,
    PrivacyCost,
    Receipt,
    ReleaseKind,
    payload_digest,
    public_key_b64,
    seal_entry,
    sign_receipt,
)

__all__ = [
    "ReleaseOrigin",
    "append_entry",
    "export_ledger",
    "latest_entries",
    "ledger_entries",
]

_ENTRIES = LedgerEntryRow.__table__  # type: ignore[attr-defined]
_HEAD = LedgerHeadRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ReleaseOrigin:
    """Who asked for a release and under which job (``job_id`` is ``None`` in push mode)."""

    requester: str = "coordinator"
    tier: DataTier = DataTier.STANDARDISED
    job_id: str | None = None
    participants: tuple[str, ...] | None = None


def _locked_head(connection: Connection) -> tuple[int, str]:
    values = {"id": 1, "seq": 0, "entry_hash": GENESIS_HASH}
    if connection.dialect.name == "postgresql":
        connection.execute(pg_insert(_HEAD).values(values).on_conflict_do_nothing())
        row = connection.execute(select(_HEAD).where(_HEAD.c.id == 1).with_for_update()).one()
    else:
        connection.execute(insert(_HEAD).values(values).prefix_with("OR IGNORE"))
        row = connection.execute(select(_HEAD).where(_HEAD.c.id == 1)).one()
    return int(row.seq), str(row.entry_hash)


def append_entry(*, connection: Connection, context: NodeContext, origin: ReleaseOrigin,
                 query_id: str, purpose: str, kind: ReleaseKind, query: Mapping[str, Any],
                 mechanism: str, cost: PrivacyCost, accounting_periods: list[int],
                 payload: Mapping[str, Any]) -> tuple[LedgerEntry, Receipt]:
    """Append the entry of one release (in the caller's transaction); return it and its
    signed receipt for the coordinator."""
    seq, prev_hash = _locked_head(connection)
    recorded_at = utcnow()
    entry = seal_entry(context.private_key, {
        "version": 1, "seq": seq + 1, "prev_hash": prev_hash,
        "node_id": context.settings.node_id, "key_id": context.key_id,
        "recorded_at": recorded_at.isoformat(), "job_id": origin.job_id,
        "query_id": query_id, "requester": origin.requester, "purpose": purpose,
        "tier": str(origin.tier), "kind": kind, "query": dict(query),
        "mechanism": mechanism, "cost": cost.model_dump(mode="json"),
        "accounting_periods": list(accounting_periods),
        "payload_sha256": payload_digest(payload),
    })
    connection.execute(insert(_ENTRIES).values(
        seq=entry.seq, query_id=query_id, entry_hash=entry.entry_hash,
        entry_json=entry.model_dump_json(), recorded_at=recorded_at))
    connection.execute(update(_HEAD).where(_HEAD.c.id == 1)
                       .values(seq=entry.seq, entry_hash=entry.entry_hash))
    return entry, sign_receipt(context.private_key, entry)


def ledger_entries(*, engine: Engine, since_seq: int = 0) -> list[LedgerEntry]:
    """The ledger's entries in order (those after ``since_seq``)."""
    with engine.connect() as connection:
        rows = connection.execute(select(_ENTRIES.c.entry_json)
                                  .where(_ENTRIES.c.seq > since_seq)
                                  .order_by(_ENTRIES.c.seq)).scalars().all()
        connection.rollback()
    return [LedgerEntry.model_validate_json(text) for text in rows]


def latest_entries(*, engine: Engine, limit: int) -> tuple[list[LedgerEntry], int]:
    """The newest ``limit`` entries (newest first) and how many the ledger holds."""
    with engine.connect() as connection:
        rows = connection.execute(select(_ENTRIES.c.entry_json).order_by(_ENTRIES.c.seq.desc())
                                  .limit(limit)).scalars().all()
        head = connection.execute(select(_HEAD.c.seq).where(_HEAD.c.id == 1)).scalar()
        connection.rollback()
    return [LedgerEntry.model_validate_json(text) for text in rows], int(head or 0)


def export_ledger(*, context: NodeContext, previous_keys: Mapping[str, str] | None = None
                  ) -> LedgerExport:
    """The whole ledger with the node's public key(s) and declared budgets, for auditors.

    ``previous_keys`` (key id -> public key) adds keys the node used before a rotation; the
    coordinator's registry holds them too, so the auditor can check them independently.
    """
    budget = context.policy.budget
    budgets = {"all": {"epsilon": budget.epsilon_per_year, "delta": budget.delta}}
    budgets.update({str(t): {"epsilon": cap, "delta": budget.delta}
                    for t, cap in budget.tiers.items()})
    keys = {**(previous_keys or {}), context.key_id: public_key_b64(context.private_key)}
    return LedgerExport.model_validate({
        "node_id": context.settings.node_id, "public_keys": keys, "budgets": budgets,
        "exported_at": utcnow(), "entries": ledger_entries(engine=context.engine)})
