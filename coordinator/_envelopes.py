"""Opening envelopes from nodes (signature, address, freshness, replay) and sealing replies.

Every refused envelope is logged at WARNING with the sender and the reason.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from coordinator._context import CoordinatorContext
from coordinator._db import NodeRow, NonceRow, utcnow
from protocols import (
    COORDINATOR_ID,
    Envelope,
    EnvelopeError,
    ForgedEnvelopeError,
    MessageKind,
    SignedEnvelope,
    open_envelope,
    seal_envelope,
)

__all__ = ["NodeRevokedError", "nonce_store", "open_from_node", "seal_for_node"]

log = logging.getLogger("coordinator.envelopes")


class NodeRevokedError(EnvelopeError):
    """The sender is not an enrolled, active node."""


def nonce_store(engine: Engine, max_age: timedelta):  # type: ignore[no-untyped-def]
    """A ``remember_nonce`` callback backed by the ``nonces`` table (expired rows purged)."""
    table = NonceRow.__table__  # type: ignore[attr-defined]

    def remember(sender: str, nonce: str, stamped_at: datetime) -> bool:
        try:
            with engine.begin() as connection:
                connection.execute(delete(table).where(
                    table.c.stamped_at < utcnow() - 2 * max_age))
                connection.execute(insert(table).values(sender=sender, nonce=nonce,
                                                        stamped_at=stamped_at))
        except IntegrityError:
            return False
        return True
    return remember


def open_from_node(context: CoordinatorContext, signed: SignedEnvelope,
                   kinds: set[MessageKind]) -> tuple[NodeRow, Envelope]:
    """Verify an envelope from an enrolled, active node; return the node and the envelope."""
    sender = signed.envelope.sender
    max_age = timedelta(seconds=context.settings.envelope_max_age_seconds)
    with Session(context.engine) as session:
        node = session.get(NodeRow, sender)
    try:
        if node is None:
            raise ForgedEnvelopeError(f"envelope from unknown node {sender!r}")
        if not node.active:
            raise NodeRevokedError(f"node {sender!r} is revoked")
        envelope = open_envelope(signed, public_key=node.public_key, recipient=COORDINATOR_ID,
                                 kinds=kinds, max_age=max_age,
                                 remember_nonce=nonce_store(context.engine, max_age))
    except EnvelopeError as exc:
        log.warning("refused %s envelope from %r: %s", signed.envelope.kind, sender, exc)
        raise
    with Session(context.engine) as session:
        row = session.get(NodeRow, sender)
        if row is not None:
            row.last_seen_at = utcnow()
            session.add(row)
            session.commit()
    return node, envelope


def seal_for_node(context: CoordinatorContext, node_id: str, kind: MessageKind,
                  body: dict[str, object]) -> SignedEnvelope:
    """An envelope from the coordinator to ``node_id``, signed with the coordinator's key."""
    return seal_envelope(context.private_key, sender=COORDINATOR_ID, recipient=node_id,
                         kind=kind, body=body)
