"""Enrolment with one-time tokens, key rotation and revocation of nodes."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator._context import CoordinatorContext
from coordinator._db import EnrolmentTokenRow, KeyRotationRow, NodeRow, utcnow
from coordinator._envelopes import nonce_store, open_from_node
from coordinator._errors import EnrolmentError
from protocols import (
    COORDINATOR_ID,
    EnrolBody,
    EnrolledBody,
    EnvelopeError,
    KeyRotation,
    MessageKind,
    RotateKeyBody,
    SignatureError,
    SignedEnvelope,
    describe_validation_error,
    key_id,
    open_envelope,
    verify,
)

__all__ = ["enrol_with_token", "issue_enrolment_token", "key_rotations_of", "revoke_node",
           "rotate_node_key"]

log = logging.getLogger("coordinator.enrolment")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_enrolment_token(*, context: CoordinatorContext, node_id: str | None = None,
                          valid_hours: float = 72.0) -> tuple[str, datetime]:
    """A new one-time token (shown once; only its hash is stored) and its expiry."""
    token = secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(hours=valid_hours)
    with Session(context.engine) as session:
        session.add(EnrolmentTokenRow(token_sha256=_digest(token), node_id=node_id,
                                      expires_at=expires))
        session.commit()
    return token, expires


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def enrol_with_token(*, context: CoordinatorContext, signed: SignedEnvelope) -> EnrolledBody:
    """Enrol the node that signed ``signed`` with the key inside it, spending its token.

    The envelope must be signed by the key it enrols (proof of possession), be fresh, and
    carry an unused, unexpired token (bound to this node id if the operator bound it).
    """
    try:
        body = EnrolBody.model_validate(signed.envelope.body)
    except ValidationError as exc:
        raise EnrolmentError(f"malformed enrolment: {describe_validation_error(exc)}") from exc
    if signed.envelope.sender != body.node_id:
        raise EnrolmentError("the enrolment's sender is not the node id it enrols")
    max_age = timedelta(seconds=context.settings.envelope_max_age_seconds)
    try:
        open_envelope(signed, public_key=body.public_key, recipient=COORDINATOR_ID,
                      kinds={MessageKind.ENROL}, max_age=max_age,
                      remember_nonce=nonce_store(context.engine, max_age))
    except EnvelopeError as exc:
        log.warning("refused enrolment of %r: %s", body.node_id, exc)
        raise EnrolmentError(str(exc)) from exc
    now = utcnow()
    with Session(context.engine) as session:
        token = session.get(EnrolmentTokenRow, _digest(body.token))
        if token is None or token.used_at is not None or _aware(token.expires_at) <= now:
            log.warning("refused enrolment of %r: unknown, used or expired token", body.node_id)
            raise EnrolmentError("the enrolment token is unknown, already used, or expired: "
                                 "ask the operator for a new one")
        if token.node_id is not None and token.node_id != body.node_id:
            raise EnrolmentError(f"this token is for node {token.node_id!r}, "
                                 f"not {body.node_id!r}")
        existing = session.get(NodeRow, body.node_id)
        if existing is not None and existing.active:
            raise EnrolmentError(f"node id {body.node_id!r} is already enrolled; rotate its "
                                 "key, or have the operator revoke it first")
        node = existing or NodeRow(node_id=body.node_id, display_name=body.display_name,
                                   public_key=body.public_key, key_id=key_id(body.public_key))
        node.display_name, node.public_key = body.display_name, body.public_key
        node.key_id, node.transport, node.active = key_id(body.public_key), "pull", True
        node.revoked_at, node.enrolled_at = None, now
        token.used_at, token.used_by = now, body.node_id
        session.add(node)
        session.add(token)
        session.commit()
    log.info("enrolled node %r with key %s", body.node_id, key_id(body.public_key))
    return EnrolledBody(node_id=body.node_id, coordinator_public_key=context.public_key)


def rotate_node_key(*, context: CoordinatorContext, signed: SignedEnvelope) -> str:
    """Replace a node's key: the envelope is signed by the old key, the body proves the new.

    The envelope is kept (``key_rotations``) for the node's peers: :func:`key_rotations_of`.
    Returns the new key id.
    """
    node, envelope = open_from_node(context, signed, {MessageKind.ROTATE_KEY})
    try:
        body = RotateKeyBody.model_validate(envelope.body)
        verify(body.new_public_key,
               {"node_id": node.node_id, "new_public_key": body.new_public_key}, body.proof)
    except (ValidationError, SignatureError) as exc:
        raise EnrolmentError(f"key rotation refused: {exc}") from exc
    with Session(context.engine) as session:
        row = session.get(NodeRow, node.node_id)
        assert row is not None
        session.add(KeyRotationRow(  # peers that pinned the old key follow the chain
            node_id=node.node_id, old_public_key=row.public_key,
            new_public_key=body.new_public_key,
            rotation_json=KeyRotation(old_public_key=row.public_key,
                                      rotation=signed).model_dump_json()))
        row.public_key, row.key_id = body.new_public_key, key_id(body.new_public_key)
        session.add(row)
        session.commit()
        log.info("node %r rotated its key to %s", node.node_id, row.key_id)
        return row.key_id


def key_rotations_of(*, engine: Engine, node_ids: Iterable[str]
                     ) -> dict[str, list[KeyRotation]]:
    """The accepted key rotations of ``node_ids`` (those with any), oldest first."""
    wanted = sorted(set(node_ids))
    with Session(engine) as session:
        rows = session.exec(select(KeyRotationRow).where(
            col(KeyRotationRow.node_id).in_(wanted)).order_by(col(KeyRotationRow.id))).all()
    out: dict[str, list[KeyRotation]] = {}
    for row in rows:
        out.setdefault(row.node_id, []).append(
            KeyRotation.model_validate_json(row.rotation_json))
    return out


def revoke_node(*, context: CoordinatorContext, node_id: str) -> None:
    """Revoke a node: its envelopes are refused and it gets no new jobs."""
    with Session(context.engine) as session:
        row = session.get(NodeRow, node_id)
        if row is None:
            raise EnrolmentError(f"no node {node_id!r} is enrolled")
        row.active, row.revoked_at = False, utcnow()
        session.add(row)
        session.commit()
    log.info("revoked node %r", node_id)
