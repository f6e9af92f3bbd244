"""The node's side of secure aggregation with distributed DP noise (client stage functions).

One function per protocol stage (``protocols.SecAggStage``), in order::

    state, advert = advertise_keys(config=..., node_id=..., identity_key=...)
    shares        = share_keys(state, roster=..., identity_keys=...)
    masked        = masked_input(state, forwarded=..., cell_values=...)   # phase "sum"
    response      = unmask(state, request=...)                            # phase "sum"
    masked        = dominance_input(state, request=...)                   # phase "dominance"
    response      = unmask(state, request=...)                            # phase "dominance"

Each takes the coordinator's last message and returns the node's next one; the node's
secrets live in a :class:`SecAggNodeState` kept in memory for the round. Nothing here does
I/O, and nothing charges the privacy budget: :func:`masked_input` is where the noise share
is added (``rho`` = ``state.config.released_rho()`` for the pooled sum, and
:func:`protocols.local_share_rho` for the node's own share if all others collude), so the
caller charges the budget before calling it.

With a sparse graph (``config.neighbours``, SecAgg+) the node keeps only its neighbours'
advertisements from the roster (the coordinator may send just those, or everyone's), shares
and masks with them only, and needs ``t`` holders (its neighbours that shared keys, and
itself) instead of ``max(t, n_min)`` nodes; the global ``n_min`` is still checked at
``unmask`` from the survivor list. The graph is computed from the config, never received.

What the node checks (every refusal raises a ``protocols.SecAggError`` subclass): that the
roster's keys are signed by the peers' Ed25519 identity keys; that every share is for this
round and this node, from a roster member, not repeated, and authenticates; that enough
nodes remain for the threshold and the noise calibration; and that it never reveals both a
peer's self-mask share and its mask-key share in the same phase.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from protocols import (
    SECAGG_SECRET_BYTES,
    AdvertiseKeys,
    DominanceRequest,
    EncryptedShare,
    ForgedMessageError,
    ForwardedShares,
    KeyRoster,
    MalformedMessageError,
    MaskedInput,
    MisaddressedMessageError,
    PhaseShares,
    ReplayedMessageError,
    SecAggConfig,
    SecAggParameterError,
    SecAggPhase,
    SecAggStageError,
    SecretShare,
    ShareKeys,
    SharePlaintext,
    SignatureError,
    TooFewSurvivorsError,
    UnknownSenderError,
    UnmaskRefusedError,
    UnmaskRequest,
    UnmaskResponse,
    add_words,
    decrypt_share_payload,
    discrete_gaussian_share,
    encode_values,
    encrypt_share_payload,
    expand_mask,
    field_element_from_b64,
    field_element_to_b64,
    generate_x25519_key,
    load_x25519_public,
    pairwise_mask_key,
    secret_to_int,
    self_mask_key,
    share_associated_data,
    share_encryption_key,
    sign,
    split_secret,
    subtract_words,
    verify,
    x25519_private_to_bytes,
    x25519_public_b64,
)
from protocols._secagg_encoding import segments_to_b64

__all__ = [
    "SecAggNodeState",
    "advertise_keys",
    "dominance_input",
    "masked_input",
    "share_keys",
    "unmask",
]

Revealed = Literal["self_mask_seed", "mask_key"]


@dataclass
class SecAggNodeState:
    """A node's private state for one round (never leaves the node).

    ``peer_shares`` holds the shares peers sent this node (and its own), by owner;
    ``share_holders`` is ``U2``, the nodes whose pairwise masks this node applies;
    ``revealed`` records, per phase, which kind of share of each peer was given out;
    ``share_keys_by_peer`` caches the AEAD key shared with each peer.
    """

    config: SecAggConfig
    node_id: str
    identity_key: Ed25519PrivateKey = field(repr=False)
    encryption_key: X25519PrivateKey = field(repr=False)
    mask_keys: dict[SecAggPhase, X25519PrivateKey] = field(repr=False)
    self_mask_seeds: dict[SecAggPhase, bytes] = field(repr=False)
    advertisement: AdvertiseKeys
    roster: dict[str, AdvertiseKeys] = field(default_factory=dict, repr=False)
    peer_shares: dict[str, dict[SecAggPhase, PhaseShares]] = field(default_factory=dict,
                                                                    repr=False)
    share_holders: tuple[str, ...] = ()
    cell_values: list[int] | None = field(default=None, repr=False)
    clipped_cells: int = 0
    inputs_sent: set[SecAggPhase] = field(default_factory=set)
    revealed: dict[SecAggPhase, dict[str, Revealed]] = field(default_factory=dict, repr=False)
    share_keys_by_peer: dict[str, bytes] = field(default_factory=dict, repr=False)


# --- advertise_keys -----------------------------------------------------------------------


def advertise_keys(
    *, config: SecAggConfig, node_id: str, identity_key: Ed25519PrivateKey
) -> tuple[SecAggNodeState, AdvertiseKeys]:
    """Stage ``advertise_keys``: fresh X25519 keys for the round, signed with the node's
    Ed25519 identity key. Returns the node's state and its advertisement."""
    if node_id not in config.node_ids:
        raise UnknownSenderError(f"node {node_id!r} is not a participant of round "
                                 f"{config.round_id}")
    encryption_key = generate_x25519_key()
    mask_keys = {phase: generate_x25519_key() for phase in SecAggPhase}
    unsigned = AdvertiseKeys(
        round_id=config.round_id,
        sender=node_id,
        encryption_key=x25519_public_b64(encryption_key),
        mask_keys={phase: x25519_public_b64(key) for phase, key in mask_keys.items()},
        signature="",
    )
    advert = unsigned.model_copy(
        update={"signature": sign(identity_key, unsigned.signed_payload())}
    )
    state = SecAggNodeState(
        config=config,
        node_id=node_id,
        identity_key=identity_key,
        encryption_key=encryption_key,
        mask_keys=mask_keys,
        self_mask_seeds={phase: secrets.token_bytes(SECAGG_SECRET_BYTES) for phase in SecAggPhase},
        advertisement=advert,
    )
    return state, advert


# --- share_keys ---------------------------------------------------------------------------


def _check_roster(state: SecAggNodeState, roster: KeyRoster,
                  identity_keys: Mapping[str, str]) -> dict[str, AdvertiseKeys]:
    config = state.config
    if roster.round_id != config.round_id:
        raise ReplayedMessageError(
            f"key roster of round {roster.round_id}, expected {config.round_id}"
        )
    accepted: dict[str, AdvertiseKeys] = {}
    wanted = config.neighbours_of(state.node_id) | {state.node_id}
    for advert in roster.advertisements:
        if config.sparse and advert.sender in config.node_ids and advert.sender not in wanted:
            continue  # not a neighbour: this node never uses its keys
        if advert.round_id != config.round_id:
            raise ReplayedMessageError(f"{advert.sender}'s keys are from round "
                                       f"{advert.round_id}")
        if advert.sender not in config.node_ids:
            raise UnknownSenderError(f"{advert.sender!r} is not a participant of the round")
        if advert.sender in accepted:
            raise ReplayedMessageError(f"{advert.sender}'s keys appear twice in the roster")
        if set(advert.mask_keys) != set(SecAggPhase):
            raise MalformedMessageError(f"{advert.sender} did not advertise a key per phase")
        public_key = identity_keys.get(advert.sender)
        if public_key is None:
            raise UnknownSenderError(f"no identity key is known for {advert.sender!r}")
        try:
            verify(public_key, advert.signed_payload(), advert.signature)
        except SignatureError as exc:
            raise ForgedMessageError(
                f"{advert.sender}'s advertised keys are not signed by its identity key"
            ) from exc
        accepted[advert.sender] = advert
    if accepted.get(state.node_id) != state.advertisement:
        raise ForgedMessageError("the roster does not carry this node's own advertised keys")
    keys = [a.encryption_key for a in accepted.values()]
    keys += [k for a in accepted.values() for k in a.mask_keys.values()]
    if len(set(keys)) != len(keys):
        raise MalformedMessageError("two advertised public keys are equal")
    needed = _holders_needed(config)
    if len(accepted) < needed:
        raise TooFewSurvivorsError(
            f"{len(accepted)} {'holders' if config.sparse else 'nodes'} advertised keys; the "
            f"round needs {needed}"
        )
    return accepted


def _holders_needed(config: SecAggConfig) -> int:
    """Least number of this node's share holders (itself included) that must remain: every
    node of the round (full graph: ``max(t, n_min)``) or ``t`` of its neighbourhood."""
    return config.threshold if config.sparse else config.required_survivors


def share_keys(
    state: SecAggNodeState, *, roster: KeyRoster, identity_keys: Mapping[str, str]
) -> ShareKeys:
    """Stage ``share_keys``: verify the roster, Shamir-share this node's mask private keys
    and self-mask seeds among the roster (threshold ``t``), and encrypt each peer's shares
    for it alone. ``identity_keys`` maps node ids to their Ed25519 public keys (base64)."""
    if state.roster:
        raise SecAggStageError("share_keys was already run for this round")
    config = state.config
    state.roster = _check_roster(state, roster, identity_keys)
    xs = {node: config.x_coordinate(node) for node in state.roster}
    split: dict[SecAggPhase, tuple[dict[int, int], dict[int, int]]] = {}
    for phase in SecAggPhase:
        mask_secret = secret_to_int(x25519_private_to_bytes(state.mask_keys[phase]))
        seed_secret = secret_to_int(state.self_mask_seeds[phase])
        split[phase] = (
            split_secret(mask_secret, threshold=config.threshold, x_coordinates=xs.values()),
            split_secret(seed_secret, threshold=config.threshold, x_coordinates=xs.values()),
        )

    def shares_for(node: str) -> dict[SecAggPhase, PhaseShares]:
        x = xs[node]
        return {
            phase: PhaseShares(
                mask_key=SecretShare(x=x, value=field_element_to_b64(mask[x])),
                self_mask_seed=SecretShare(x=x, value=field_element_to_b64(seed[x])),
            )
            for phase, (mask, seed) in split.items()
        }

    encrypted = []
    for peer, advert in state.roster.items():
        if peer == state.node_id:
            state.peer_shares[peer] = shares_for(peer)
            continue
        plaintext = SharePlaintext(round_id=config.round_id, sender=state.node_id,
                                   recipient=peer, phases=shares_for(peer))
        key = share_encryption_key(state.encryption_key,
                                   load_x25519_public(advert.encryption_key),
                                   round_id=config.round_id, node_a=state.node_id, node_b=peer)
        state.share_keys_by_peer[peer] = key  # the same key opens the peer's shares to us
        nonce, ciphertext = encrypt_share_payload(
            key,
            plaintext.model_dump_json().encode("utf-8"),
            associated_data=share_associated_data(round_id=config.round_id,
                                                  sender=state.node_id, recipient=peer),
        )
        encrypted.append(EncryptedShare(round_id=config.round_id, sender=state.node_id,
                                        recipient=peer, nonce=nonce, ciphertext=ciphertext))
    return ShareKeys(round_id=config.round_id, sender=state.node_id, shares=tuple(encrypted))


# --- masked_input -------------------------------------------------------------------------


def _open_share(state: SecAggNodeState, share: EncryptedShare) -> dict[SecAggPhase, PhaseShares]:
    """Check, decrypt and validate one relayed share (see the module docstring)."""
    config = state.config
    if share.round_id != config.round_id:
        raise ReplayedMessageError(
            f"share from {share.sender} belongs to round {share.round_id}, not "
            f"{config.round_id}"
        )
    if share.recipient != state.node_id:
        raise MisaddressedMessageError(
            f"share from {share.sender} is addressed to {share.recipient!r}, not "
            f"{state.node_id!r}"
        )
    if share.sender == state.node_id or share.sender not in state.roster:
        raise UnknownSenderError(f"share from {share.sender!r}, who is not a peer in the roster")
    key = state.share_keys_by_peer.get(share.sender) or share_encryption_key(
        state.encryption_key,
        load_x25519_public(state.roster[share.sender].encryption_key),
        round_id=config.round_id, node_a=state.node_id, node_b=share.sender,
    )
    plaintext = decrypt_share_payload(
        key, nonce_b64=share.nonce, ciphertext_b64=share.ciphertext,
        associated_data=share_associated_data(round_id=config.round_id,
                                              sender=share.sender, recipient=state.node_id),
    )
    try:
        opened = SharePlaintext.model_validate_json(plaintext)
    except ValidationError as exc:
        raise MalformedMessageError(f"share from {share.sender} does not parse") from exc
    if (opened.round_id, opened.sender, opened.recipient) != (
        config.round_id, share.sender, state.node_id
    ):
        raise MalformedMessageError(f"share from {share.sender} names another round or pair")
    if set(opened.phases) != set(SecAggPhase):
        raise MalformedMessageError(f"share from {share.sender} lacks a phase")
    x = config.x_coordinate(state.node_id)
    for shares in opened.phases.values():
        for part in (shares.mask_key, shares.self_mask_seed):
            if part.x != x:
                raise MalformedMessageError(f"share from {share.sender} is for x={part.x}, "
                                            f"not this node's x={x}")
            field_element_from_b64(part.value)
    return opened.phases


def _receive_shares(state: SecAggNodeState, forwarded: ForwardedShares) -> None:
    config = state.config
    if forwarded.round_id != config.round_id:
        raise ReplayedMessageError(f"forwarded shares of round {forwarded.round_id}")
    if forwarded.recipient != state.node_id:
        raise MisaddressedMessageError(f"forwarded shares are for {forwarded.recipient!r}")
    received: dict[str, dict[SecAggPhase, PhaseShares]] = {}
    for share in forwarded.shares:
        if share.sender in received:
            raise ReplayedMessageError(f"a second share from {share.sender} in this round")
        received[share.sender] = _open_share(state, share)
    holders = sorted([*received, state.node_id])
    needed = _holders_needed(config)
    if len(holders) < needed:
        raise TooFewSurvivorsError(
            f"only {len(holders)} {'holders' if config.sparse else 'nodes'} shared keys; the "
            f"round needs {needed}"
        )
    state.peer_shares.update(received)
    state.share_holders = tuple(holders)


def _mask(state: SecAggNodeState, phase: SecAggPhase, values: Sequence[int]) -> MaskedInput:
    """Encode ``values``, add the self mask and the pairwise masks of ``phase``.

    Arithmetic is modulo ``2**64``; each segment is reduced to its own modulus on the wire
    (``config.segments``; a ring homomorphism, so the masks still cancel in the sum)."""
    config = state.config
    bits = 64
    length = config.vector_length(phase)
    words = encode_values(values, bound=config.encoded_bound, modulus_bits=bits)
    seed_key = self_mask_key(state.self_mask_seeds[phase], round_id=config.round_id,
                             phase=str(phase))
    words = add_words(words, expand_mask(seed_key, length=length, modulus_bits=bits),
                      modulus_bits=bits)
    for peer in state.share_holders:
        if peer == state.node_id:
            continue
        key = pairwise_mask_key(
            state.mask_keys[phase], load_x25519_public(state.roster[peer].mask_keys[phase]),
            round_id=config.round_id, phase=str(phase), node_a=state.node_id, node_b=peer,
        )
        mask = expand_mask(key, length=length, modulus_bits=bits)
        combine = add_words if state.node_id < peer else subtract_words
        words = combine(words, mask, modulus_bits=bits)
    state.inputs_sent.add(phase)
    return MaskedInput(round_id=config.round_id, phase=phase, sender=state.node_id,
                       words=segments_to_b64(words, config.segments(phase)))


def masked_input(
    state: SecAggNodeState, *, forwarded: ForwardedShares, cell_values: Sequence[int]
) -> MaskedInput:
    """Stage ``masked_input`` of phase ``sum``.

    ``forwarded``: the shares peers sent this node (each checked and decrypted; their senders
    are ``U2``). ``cell_values``: the node's exact fixed-point cell sums in public-key order
    (``node._aggregate.exact_cell_values``), clipped here to ``[0, clip]``. The node adds its
    discrete Gaussian share ``N_Z(0, node_sigma^2)`` (OpenDP) to every sum, appends one
    contributor flag per cell (1 if its value is positive), encodes, and masks.

    Privacy: the pooled sums are ``config.released_rho()``-zCDP once at least
    ``min_survivors`` inputs are summed; this node's share alone is
    ``local_share_rho(l2_sensitivity, node_sigma)``-zCDP. Charge the budget before calling.
    """
    config = state.config
    if not state.roster:
        raise SecAggStageError("masked_input before share_keys")
    if SecAggPhase.SUM in state.inputs_sent:
        raise SecAggStageError("masked_input was already sent for this round")
    if len(cell_values) != config.cells:
        raise SecAggParameterError(f"{len(cell_values)} cell values for {config.cells} cells")
    _receive_shares(state, forwarded)
    raw = np.array([int(v) for v in cell_values], dtype=np.int64)
    clipped = np.clip(raw, 0, config.clip)
    state.clipped_cells = int(np.count_nonzero(clipped != raw))
    state.cell_values = [int(v) for v in clipped]
    noisy = discrete_gaussian_share(node_sigma=config.node_sigma).add_noise(
        state.cell_values, tail_bound=config.noise_tail_bound
    )
    flags = [1 if v > 0 else 0 for v in state.cell_values]
    return _mask(state, SecAggPhase.SUM, [*noisy, *flags])


# --- unmask -------------------------------------------------------------------------------


def unmask(state: SecAggNodeState, *, request: UnmaskRequest) -> UnmaskResponse:
    """Stage ``unmask``: reveal shares of the survivors' self-mask seeds and of the dropped
    nodes' mask keys for ``request.phase``.

    Refuses (:class:`UnmaskRefusedError`) if the lists do not split ``U2`` exactly (sparse
    graph: if they overlap, repeat a node, name a non-participant, or leave out one of this
    node's holders), if this node is listed as dropped, or if answering would reveal both
    kinds of share of one peer in the phase; :class:`TooFewSurvivorsError` if fewer than
    ``max(t, n_min)`` survive (the noise would be below its calibration). With a sparse
    graph the node answers for its own holders only.
    """
    config = state.config
    phase = request.phase
    if request.round_id != config.round_id:
        raise ReplayedMessageError(f"unmask request of round {request.round_id}")
    if phase not in state.inputs_sent:
        raise SecAggStageError(f"unmask of phase {phase} before this node's masked input")
    survivors, dropped = set(request.survivors), set(request.dropped)
    if survivors & dropped:
        raise UnmaskRefusedError(
            f"nodes listed both as survivors and dropped: {sorted(survivors & dropped)}"
        )
    holders = set(state.share_holders)
    if len(survivors) != len(request.survivors) or len(dropped) != len(request.dropped):
        raise UnmaskRefusedError("survivors or dropped nodes are listed twice")
    if config.sparse:
        if not survivors | dropped <= set(config.node_ids) or not holders <= survivors | dropped:
            raise UnmaskRefusedError("survivors and dropped do not cover this node's holders")
    elif survivors | dropped != holders:
        raise UnmaskRefusedError("survivors and dropped do not split the share holders")
    survivors &= holders  # with the full graph, already so
    dropped &= holders
    if state.node_id not in survivors:
        raise UnmaskRefusedError("this node sent its masked input but is listed as dropped")
    if len(request.survivors) < config.required_survivors:
        raise TooFewSurvivorsError(
            f"{len(request.survivors)} survivors; the round needs {config.required_survivors}"
        )
    revealed = state.revealed.setdefault(phase, {})
    for node in sorted(survivors):
        if revealed.get(node) == "mask_key":
            raise UnmaskRefusedError(f"{node}'s mask-key share was revealed in phase {phase}; "
                                     "its self-mask share will not be")
    for node in sorted(dropped):
        if revealed.get(node) == "self_mask_seed":
            raise UnmaskRefusedError(f"{node}'s self-mask share was revealed in phase {phase}; "
                                     "its mask-key share will not be")
    for node in survivors:
        revealed[node] = "self_mask_seed"
    for node in dropped:
        revealed[node] = "mask_key"
    return UnmaskResponse(
        round_id=config.round_id,
        phase=phase,
        sender=state.node_id,
        self_mask_seed_shares={
            node: state.peer_shares[node][phase].self_mask_seed for node in sorted(survivors)
        },
        mask_key_shares={node: state.peer_shares[node][phase].mask_key for node in sorted(dropped)},
    )


# --- dominance ----------------------------------------------------------------------------


def dominance_input(state: SecAggNodeState, *, request: DominanceRequest) -> MaskedInput:
    """Stage ``masked_input`` of phase ``dominance``: one indicator per cell, 1 where this
    node contributed and its own (clipped, noise-free) value exceeds ``dominance_percent`` %
    of the broadcast noisy total. No noise is added: the indicator sum is a publication rule,
    not a DP release (docs/secure-aggregation.md)."""
    config = state.config
    if request.round_id != config.round_id:
        raise ReplayedMessageError(f"dominance request of round {request.round_id}")
    if SecAggPhase.SUM not in state.revealed or state.cell_values is None:
        raise SecAggStageError("dominance_input before the sum phase was unmasked")
    if SecAggPhase.DOMINANCE in state.inputs_sent:
        raise SecAggStageError("dominance_input was already sent for this round")
    if state.node_id not in request.participants:
        raise MisaddressedMessageError("this node is not a participant of the dominance check")
    if len(request.noisy_totals) != config.cells:
        raise MalformedMessageError(
            f"{len(request.noisy_totals)} noisy totals for {config.cells} cells"
        )
    percent = config.dominance_percent
    indicators = [
        1 if own > 0 and total is not None and 100 * own > percent * total else 0
        for own, total in zip(state.cell_values, request.noisy_totals, strict=True)
    ]
    return _mask(state, SecAggPhase.DOMINANCE, indicators)
