"""Key rotations that a third party can check: the chain from a pinned key to a node's key.

A node rotates its identity key by sending a ``rotate_key`` envelope signed by its *old* key
whose body (:class:`~protocols.RotateKeyBody`) carries the new public key and the new key's
signature over ``{node_id, new_public_key}``. The coordinator keeps that envelope
(:class:`KeyRotation`) and hands a node's rotations to its peers with a secure-aggregation
round, so that a peer that pinned the old key can follow the chain to the new one without
trusting the coordinator: only the holder of the old key could have signed the envelope.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols._envelope import MessageKind, SignedEnvelope
from protocols._errors import SignatureError
from protocols._jobs import RotateKeyBody
from protocols._signing import verify

__all__ = ["KeyRotation", "follow_key_rotations", "verify_key_rotation"]


class KeyRotation(BaseModel):
    """One accepted rotation of a node's identity key: the key it replaced and the node's
    ``rotate_key`` envelope, signed by that key, as the coordinator received it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    old_public_key: str = Field(max_length=100)
    rotation: SignedEnvelope


def verify_key_rotation(rotation: KeyRotation, *, node_id: str) -> str:
    """The new public key of ``node_id``'s ``rotation``, once checked.

    Raises :class:`SignatureError` unless the envelope is ``node_id``'s ``rotate_key`` message
    signed by ``rotation.old_public_key`` and the body's proof is the new key's signature.
    Freshness is not checked: a rotation stays valid evidence after it was accepted.
    """
    envelope = rotation.rotation.envelope
    if envelope.sender != node_id or envelope.kind is not MessageKind.ROTATE_KEY:
        raise SignatureError(f"not a key rotation of {node_id!r} (a {envelope.kind} envelope "
                             f"from {envelope.sender!r})")
    try:
        verify(rotation.old_public_key, envelope.model_dump(mode="json"),
               rotation.rotation.signature)
        body = RotateKeyBody.model_validate(envelope.body)
        verify(body.new_public_key, {"node_id": node_id, "new_public_key": body.new_public_key},
               body.proof)
    except (SignatureError, ValidationError) as exc:
        raise SignatureError(f"{node_id}'s key rotation does not verify: {exc}") from None
    return body.new_public_key


def follow_key_rotations(rotations: Sequence[KeyRotation], *, node_id: str, start: str,
                         target: str) -> bool:
    """Whether ``rotations`` (oldest first) lead from ``start`` to ``target``, each signed by
    the key before it. Rotations that do not start at the current key, or do not verify,
    are skipped (a forged one cannot extend the chain)."""
    current = start
    for rotation in rotations:
        if rotation.old_public_key != current:
            continue
        try:
            current = verify_key_rotation(rotation, node_id=node_id)
        except SignatureError:
            continue
        if current == target:
            return True
    return current == target
