"""Key rotations a peer can check without trusting the coordinator (protocols._key_rotation)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import (
    COORDINATOR_ID,
    KeyRotation,
    MessageKind,
    RotateKeyBody,
    SignatureError,
    follow_key_rotations,
    generate_private_key,
    public_key_b64,
    seal_envelope,
    sign,
    verify_key_rotation,
)


def rotation(old: Ed25519PrivateKey, new: Ed25519PrivateKey, *, node_id: str = "bolt",
             signer: Ed25519PrivateKey | None = None,
             kind: MessageKind = MessageKind.ROTATE_KEY) -> KeyRotation:
    """``node_id``'s rotation from ``old`` to ``new``, as the node sends it (the envelope
    signed by ``signer``, by default the old key)."""
    new_public = public_key_b64(new)
    body = RotateKeyBody(new_public_key=new_public,
                         proof=sign(new, {"node_id": node_id, "new_public_key": new_public}))
    return KeyRotation(old_public_key=public_key_b64(old), rotation=seal_envelope(
        signer or old, sender=node_id, recipient=COORDINATOR_ID, kind=kind,
        body=body.model_dump(mode="json")))


def test_a_rotation_signed_by_the_old_key_gives_the_new_key() -> None:
    old, new = generate_private_key(), generate_private_key()
    assert verify_key_rotation(rotation(old, new), node_id="bolt") == public_key_b64(new)


def test_forged_or_misattributed_rotations_are_refused() -> None:
    old, new, mallory = (generate_private_key() for _ in range(3))
    with pytest.raises(SignatureError, match="does not verify"):  # not signed by the old key
        verify_key_rotation(rotation(old, new, signer=mallory), node_id="bolt")
    with pytest.raises(SignatureError, match="not a key rotation of 'bolt'"):
        verify_key_rotation(rotation(old, new, node_id="core"), node_id="bolt")
    with pytest.raises(SignatureError, match="not a key rotation"):
        verify_key_rotation(rotation(old, new, kind=MessageKind.RESULT), node_id="bolt")
    good = rotation(old, new)
    other = public_key_b64(mallory)
    swapped = good.model_copy(update={"rotation": good.rotation.model_copy(update={
        "envelope": good.rotation.envelope.model_copy(update={"body": {
            **good.rotation.envelope.body, "new_public_key": other}})})})
    with pytest.raises(SignatureError, match="does not verify"):  # the body was altered
        verify_key_rotation(swapped, node_id="bolt")


def test_a_chain_of_rotations_is_followed_and_a_forged_link_is_skipped() -> None:
    k0, k1, k2, mallory = (generate_private_key() for _ in range(4))
    chain = [rotation(k0, k1), rotation(k1, k2)]
    start, end = public_key_b64(k0), public_key_b64(k2)
    assert follow_key_rotations(chain, node_id="bolt", start=start, target=end)
    assert follow_key_rotations(chain, node_id="bolt", start=public_key_b64(k1), target=end)
    assert not follow_key_rotations(chain[1:], node_id="bolt", start=start, target=end)
    # a link the coordinator made up (from k0 to its own key) does not lead anywhere ...
    fake = rotation(k0, mallory, signer=mallory)
    assert not follow_key_rotations([fake], node_id="bolt", start=start,
                                    target=public_key_b64(mallory))
    # ... and does not break the genuine chain when slipped in front of it
    assert follow_key_rotations([fake, *chain], node_id="bolt", start=start, target=end)
