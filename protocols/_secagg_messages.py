"""Wire messages of secure aggregation, one model per stage and direction.

Every message names its ``round_id`` and, where it matters, its ``phase``; the receiving
stage function checks them (a message of another round or stage is refused as replayed).
Binary fields are base64. In the live system each message travels in a signed envelope
(:mod:`protocols._envelope`), which authenticates its sender to the coordinator; the
protocol adds its own authentication where the coordinator must not be trusted:

* advertised public keys are signed with the node's Ed25519 identity key
  (:meth:`AdvertiseKeys.signed_payload`), so the coordinator cannot substitute its own;
* shares are encrypted and authenticated node to node (ChaCha20-Poly1305), with associated
  data :func:`share_associated_data` binding round, stage, sender and recipient.

The coordinator receives: :class:`AdvertiseKeys`, :class:`ShareKeys` (ciphertexts only),
:class:`MaskedInput` (uniformly masked words) and :class:`UnmaskResponse` (shares of
survivors' self-mask seeds and of dropped nodes' mask keys). It sends :class:`KeyRoster`,
:class:`ForwardedShares`, :class:`UnmaskRequest`, :class:`DominanceRequest` and finally
computes a :class:`SecurePoolResult`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from protocols._secagg_stages import SecAggPhase, SecAggStage
from protocols._signing import canonical_json

__all__ = [
    "AdvertiseKeys",
    "CellStatus",
    "DominanceRequest",
    "EncryptedShare",
    "ForwardedShares",
    "KeyRoster",
    "MaskedInput",
    "PhaseShares",
    "SecretShare",
    "SecurePoolResult",
    "ShareKeys",
    "SharePlaintext",
    "UnmaskRequest",
    "UnmaskResponse",
    "share_associated_data",
]

NodeId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
RoundId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Base64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=50_000_000)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class AdvertiseKeys(BaseModel):
    """Node -> coordinator (``advertise_keys``): the node's public keys for this round.

    ``encryption_key`` (X25519) is for shares sent to this node; ``mask_keys`` has one X25519
    key per phase for pairwise masks. ``signature`` is the node's Ed25519 signature over
    :meth:`signed_payload`.
    """

    model_config = _FROZEN

    round_id: RoundId
    sender: NodeId
    encryption_key: Base64
    mask_keys: dict[SecAggPhase, Base64]
    signature: Base64

    def signed_payload(self) -> dict[str, Any]:
        """What the signature covers: round, stage, sender and every advertised key."""
        return {
            "round_id": self.round_id,
            "stage": str(SecAggStage.ADVERTISE_KEYS),
            "sender": self.sender,
            "encryption_key": self.encryption_key,
            "mask_keys": {str(phase): key for phase, key in self.mask_keys.items()},
        }


class KeyRoster(BaseModel):
    """Coordinator -> every node: all advertisements it accepted, sorted by sender."""

    model_config = _FROZEN

    round_id: RoundId
    advertisements: tuple[AdvertiseKeys, ...]


class EncryptedShare(BaseModel):
    """One node's shares for one peer, encrypted so only that peer can read them."""

    model_config = _FROZEN

    round_id: RoundId
    sender: NodeId
    recipient: NodeId
    nonce: Base64
    ciphertext: Base64


class ShareKeys(BaseModel):
    """Node -> coordinator (``share_keys``): one :class:`EncryptedShare` per peer."""

    model_config = _FROZEN

    round_id: RoundId
    sender: NodeId
    shares: tuple[EncryptedShare, ...]


class ForwardedShares(BaseModel):
    """Coordinator -> one node: the ciphertexts addressed to it, one per share-sending peer.

    The senders of these shares are the nodes whose pairwise masks the recipient applies.
    """

    model_config = _FROZEN

    round_id: RoundId
    recipient: NodeId
    shares: tuple[EncryptedShare, ...]


class SecretShare(BaseModel):
    """One Shamir share ``(x, f(x))``; ``value`` is a field element, base64 (33 bytes)."""

    model_config = _FROZEN

    x: int = Field(ge=1, le=1000)
    value: Base64


class PhaseShares(BaseModel):
    """A node's shares, for one peer, of its mask private key and self-mask seed of a phase."""

    model_config = _FROZEN

    mask_key: SecretShare
    self_mask_seed: SecretShare


class SharePlaintext(BaseModel):
    """What an :class:`EncryptedShare` decrypts to (never seen by the coordinator)."""

    model_config = _FROZEN

    round_id: RoundId
    sender: NodeId
    recipient: NodeId
    phases: dict[SecAggPhase, PhaseShares]


class MaskedInput(BaseModel):
    """Node -> coordinator (``masked_input``): the node's masked vector for one phase.

    ``words``: little-endian ring words, base64 (see ``words_to_b64``); uniformly random to
    anyone who does not hold the masks.
    """

    model_config = _FROZEN

    round_id: RoundId
    phase: SecAggPhase
    sender: NodeId
    words: Base64


class UnmaskRequest(BaseModel):
    """Coordinator -> surviving nodes (``unmask``): whose masked input was received
    (``survivors``) and who shared keys but sent none (``dropped``)."""

    model_config = _FROZEN

    round_id: RoundId
    phase: SecAggPhase
    survivors: tuple[NodeId, ...]
    dropped: tuple[NodeId, ...]


class UnmaskResponse(BaseModel):
    """Node -> coordinator (``unmask``): the shares it holds of survivors' self-mask seeds
    and of dropped nodes' mask keys, keyed by the share owner's node id."""

    model_config = _FROZEN

    round_id: RoundId
    phase: SecAggPhase
    sender: NodeId
    self_mask_seed_shares: dict[NodeId, SecretShare]
    mask_key_shares: dict[NodeId, SecretShare]


class DominanceRequest(BaseModel):
    """Coordinator -> the sum phase's survivors, before the ``dominance`` phase.

    ``noisy_totals``: the DP cell totals (fixed point) of the sum phase; ``None`` for cells
    already suppressed for too few contributors (their totals are not broadcast).
    ``participants``: the nodes whose inputs are in the totals; only they take part.
    """

    model_config = _FROZEN

    round_id: RoundId
    noisy_totals: tuple[int | None, ...]
    participants: tuple[NodeId, ...]


class CellStatus(StrEnum):
    """Whether a pooled cell is published, and if not, by which rule it is suppressed."""

    PUBLISHED = "published"
    TOO_FEW_CONTRIBUTORS = "too_few_contributors"
    DOMINATED = "dominated"
    DOMINANCE_UNCHECKED = "dominance_unchecked"  # a contributor did not answer the check


class SecurePoolResult(BaseModel):
    """The coordinator's outcome of a round.

    ``noisy_totals`` are fixed-point (divide by ``scale``) and ``None`` unless published.
    ``contributors`` are the exact securely summed contributor counts (a publication rule,
    not DP; see docs/secure-aggregation.md). ``released_rho`` is the zCDP ``rho`` of the
    noisy totals given the ``len(sum_survivors)`` inputs actually summed; ``noise_std`` is
    the standard deviation of their noise in fixed-point units.
    """

    model_config = _FROZEN

    round_id: RoundId
    scale: int
    noisy_totals: tuple[int | None, ...]
    status: tuple[CellStatus, ...]
    contributors: tuple[int, ...]
    sum_survivors: tuple[NodeId, ...]
    dominance_survivors: tuple[NodeId, ...]
    released_rho: float
    noise_std: float


def share_associated_data(*, round_id: str, sender: str, recipient: str) -> bytes:
    """The AEAD associated data of an encrypted share: round, stage, sender, recipient."""
    return canonical_json(
        {
            "round_id": round_id,
            "stage": str(SecAggStage.SHARE_KEYS),
            "sender": sender,
            "recipient": recipient,
        }
    )
