"""Signed envelopes: every message between a node and the coordinator in pull mode.

An envelope names its sender and recipient, carries a fresh nonce and a timestamp, says what
kind of message it is (:class:`MessageKind`, the protocol's stages, shared by both sides) and
holds a JSON body. The sender signs the canonical JSON of the envelope with its Ed25519 key.

A recipient accepts an envelope only if (:func:`open_envelope`):

* the signature verifies against the key it has registered (or pinned) for the sender;
* it is addressed to the recipient;
* its timestamp is within ``max_age`` of the recipient's clock (both ways);
* its nonce has not been seen from that sender within ``max_age`` (the caller keeps the
  nonces: :func:`open_envelope` takes a callback that records a nonce and says if it is new).

Anything else raises a subclass of :class:`EnvelopeError` whose message says why.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from protocols._errors import ProtocolError, SignatureError
from protocols._signing import sign, verify

__all__ = [
    "COORDINATOR_ID",
    "DEFAULT_MAX_AGE",
    "Envelope",
    "EnvelopeError",
    "ExpiredEnvelopeError",
    "ForgedEnvelopeError",
    "MessageKind",
    "MisaddressedEnvelopeError",
    "ReplayedEnvelopeError",
    "SignedEnvelope",
    "open_envelope",
    "seal_envelope",
]

#: The coordinator's identity as a sender and recipient.
COORDINATOR_ID = "coordinator"
#: How old (or how far in the future) an envelope may be.
DEFAULT_MAX_AGE = timedelta(minutes=5)


class MessageKind(StrEnum):
    """The stages of the pull protocol; both sides use these names."""

    ENROL = "enrol"  # node -> coordinator: one-time token + public key
    ENROLLED = "enrolled"  # coordinator -> node: the coordinator's key, confirmation
    POLL = "poll"  # node -> coordinator: any job for me?
    JOB = "job"  # coordinator -> node: a job to run
    STATUS = "status"  # node -> coordinator: a job's state changed (e.g. awaiting approval)
    RESULT = "result"  # node -> coordinator: the signed DP answer to a job
    REFUSAL = "refusal"  # node -> coordinator: the node will not answer a job, and why
    ROTATE_KEY = "rotate_key"  # node -> coordinator: replace my key (signed by the old one)
    ACK = "ack"  # coordinator -> node: received
    SECAGG_JOB = "secagg_job"  # coordinator -> node: the next step of a secure-aggregation round
    SECAGG_MESSAGE = "secagg_message"  # node -> coordinator: its message (or refusal) for it


class EnvelopeError(ProtocolError):
    """An envelope was refused; the message says why."""


class ForgedEnvelopeError(EnvelopeError, SignatureError):
    """The signature does not verify against the sender's registered key (or is missing)."""


class MisaddressedEnvelopeError(EnvelopeError):
    """The envelope is addressed to someone else, or its kind is not expected here."""


class ExpiredEnvelopeError(EnvelopeError):
    """The envelope's timestamp is too old or too far in the future."""


class ReplayedEnvelopeError(EnvelopeError):
    """The envelope's nonce was seen before from this sender."""


class Envelope(BaseModel):
    """What is signed: routing, freshness, kind, body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sender: str = Field(min_length=1, max_length=63)
    recipient: str = Field(min_length=1, max_length=63)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    timestamp: datetime
    kind: MessageKind
    body: dict[str, Any] = Field(default_factory=dict)


class SignedEnvelope(BaseModel):
    """An envelope with its sender's Ed25519 signature over the envelope's canonical JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    envelope: Envelope
    signature: str = Field(min_length=1, max_length=200)


def seal_envelope(
    key: Ed25519PrivateKey,
    *,
    sender: str,
    recipient: str,
    kind: MessageKind,
    body: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> SignedEnvelope:
    """Build and sign an envelope with a fresh random nonce."""
    envelope = Envelope(
        sender=sender,
        recipient=recipient,
        nonce=secrets.token_hex(16),
        timestamp=now or datetime.now(UTC),
        kind=kind,
        body=body or {},
    )
    return SignedEnvelope(
        envelope=envelope, signature=sign(key, envelope.model_dump(mode="json"))
    )


def open_envelope(
    signed: SignedEnvelope,
    *,
    public_key: str,
    recipient: str,
    kinds: set[MessageKind],
    remember_nonce: Callable[[str, str, datetime], bool],
    now: datetime | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> Envelope:
    """Verify ``signed`` (see the module docstring) and return its envelope.

    ``remember_nonce(sender, nonce, timestamp)`` must record the nonce and return ``False``
    if it was already recorded. It is called last, so a forged or stale envelope never
    consumes a nonce.
    """
    envelope = signed.envelope
    try:
        verify(public_key, envelope.model_dump(mode="json"), signed.signature)
    except SignatureError as exc:
        raise ForgedEnvelopeError(
            f"envelope from {envelope.sender!r} is not signed by its registered key"
        ) from exc
    if envelope.recipient != recipient:
        raise MisaddressedEnvelopeError(
            f"envelope from {envelope.sender!r} is addressed to {envelope.recipient!r}, "
            f"not {recipient!r}"
        )
    if envelope.kind not in kinds:
        expected = ", ".join(sorted(str(k) for k in kinds))
        raise MisaddressedEnvelopeError(
            f"envelope of kind {str(envelope.kind)!r} where {expected} was expected"
        )
    now = now or datetime.now(UTC)
    stamp = envelope.timestamp
    if stamp.tzinfo is None:
        raise ExpiredEnvelopeError("envelope timestamp has no time zone")
    if abs(now - stamp) > max_age:
        raise ExpiredEnvelopeError(
            f"envelope from {envelope.sender!r} is stamped {stamp.isoformat()}, more than "
            f"{max_age.total_seconds():.0f} s from now ({now.isoformat()})"
        )
    if not remember_nonce(envelope.sender, envelope.nonce, stamp):
        raise ReplayedEnvelopeError(
            f"envelope from {envelope.sender!r} replays nonce {envelope.nonce}"
        )
    return envelope
