"""The coordinator's side of secure aggregation (server stage functions).

The coordinator collects and validates each stage's messages, broadcasts what the next
stage needs, and finally removes the masks. It learns only the pooled noisy cell sums, the
exact contributor counts per cell, and the number of dominant companies per cell: never
one node's input (docs/secure-aggregation.md). In order::

    state = start_round(config=..., identity_keys=...)
    receive_advertisement(state, advert)        # for each node          (advertise_keys)
    roster = broadcast_roster(state)
    receive_shares(state, share_keys)           # for each node          (share_keys)
    forwarded = forward_shares(state)           # one message per node
    receive_masked_input(state, masked)         # for each node          (masked_input)
    request = request_unmask(state, phase=SecAggPhase.SUM)
    receive_unmask_response(state, response)    # for each survivor      (unmask)
    unmask_phase(state, phase=SecAggPhase.SUM)
    dominance = request_dominance(state)
    ... masked_input, request_unmask, receive_unmask_response, unmask_phase for
        SecAggPhase.DOMINANCE ...
    result = finish_round(state)

With a sparse graph (``config.neighbours``, SecAgg+) each node gets only its neighbours'
advertisements (:func:`roster_for`; :func:`broadcast_roster` still gives everyone's, which a
node accepts too), shares only with them, and a node's secrets are rebuilt from the
responses of its own holders (``config.holders_of``).

Nothing here does I/O; the state is a plain dataclass kept per round. Every refused
message raises a ``protocols.SecAggError`` subclass and leaves the state unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from protocols import (
    AdvertiseKeys,
    CellStatus,
    DominanceRequest,
    ForgedMessageError,
    ForwardedShares,
    KeyRoster,
    MalformedMessageError,
    MaskedInput,
    MisaddressedMessageError,
    ReplayedMessageError,
    RingWords,
    SecAggConfig,
    SecAggPhase,
    SecAggStageError,
    SecurePoolResult,
    ShareKeys,
    SignatureError,
    TooFewSurvivorsError,
    UnknownSenderError,
    UnmaskRequest,
    UnmaskResponse,
    add_words,
    expand_mask,
    field_element_from_b64,
    lagrange_coefficients_at_zero,
    load_x25519_public,
    pairwise_mask_key,
    reconstruct_secret,
    secret_from_int,
    self_mask_key,
    subtract_words,
    verify,
    x25519_private_from_bytes,
    x25519_public_b64,
)
from protocols._secagg_encoding import decode_segments, segments_from_b64

__all__ = [
    "SecAggServerState",
    "broadcast_roster",
    "finish_round",
    "forward_shares",
    "receive_advertisement",
    "receive_masked_input",
    "receive_shares",
    "receive_unmask_response",
    "request_dominance",
    "request_unmask",
    "roster_for",
    "start_round",
    "unmask_phase",
]


@dataclass
class SecAggServerState:
    """What the coordinator holds during one round (public keys, ciphertexts, masked words).

    ``share_holders`` is ``U2`` (nodes whose shares were forwarded); ``masked`` and
    ``unmask_responses`` are per phase; ``sums`` holds each phase's decoded sum once
    :func:`unmask_phase` has run.
    """

    config: SecAggConfig
    identity_keys: Mapping[str, str]
    advertisements: dict[str, AdvertiseKeys] = field(default_factory=dict)
    roster: KeyRoster | None = None
    share_messages: dict[str, ShareKeys] = field(default_factory=dict)
    share_holders: tuple[str, ...] = ()
    masked: dict[SecAggPhase, dict[str, RingWords]] = field(default_factory=dict, repr=False)
    unmask_requests: dict[SecAggPhase, UnmaskRequest] = field(default_factory=dict)
    unmask_responses: dict[SecAggPhase, dict[str, UnmaskResponse]] = field(
        default_factory=dict, repr=False
    )
    sums: dict[SecAggPhase, list[int]] = field(default_factory=dict, repr=False)
    dominance_request: DominanceRequest | None = None


def start_round(*, config: SecAggConfig, identity_keys: Mapping[str, str]) -> SecAggServerState:
    """A new round. ``identity_keys``: each participant's Ed25519 public key (base64), as
    registered at enrolment."""
    missing = sorted(set(config.node_ids) - set(identity_keys))
    if missing:
        raise UnknownSenderError(f"no identity key registered for {missing}")
    return SecAggServerState(config=config, identity_keys=dict(identity_keys))


def _check_round(state: SecAggServerState, round_id: str, what: str) -> None:
    if round_id != state.config.round_id:
        raise ReplayedMessageError(f"{what} of round {round_id}, not {state.config.round_id}")


# --- advertise_keys -----------------------------------------------------------------------


def receive_advertisement(state: SecAggServerState, message: AdvertiseKeys) -> None:
    """Stage ``advertise_keys``: accept one node's signed public keys."""
    _check_round(state, message.round_id, "advertised keys")
    if state.roster is not None:
        raise SecAggStageError("the key roster was already broadcast")
    if message.sender not in state.config.node_ids:
        raise UnknownSenderError(f"{message.sender!r} is not a participant of the round")
    if message.sender in state.advertisements:
        raise ReplayedMessageError(f"{message.sender} already advertised its keys")
    if set(message.mask_keys) != set(SecAggPhase):
        raise MalformedMessageError(f"{message.sender} did not advertise a key per phase")
    for key in (message.encryption_key, *message.mask_keys.values()):
        load_x25519_public(key)
    try:
        verify(state.identity_keys[message.sender], message.signed_payload(), message.signature)
    except SignatureError as exc:
        raise ForgedMessageError(
            f"{message.sender}'s keys are not signed by its registered identity key"
        ) from exc
    state.advertisements[message.sender] = message


def broadcast_roster(state: SecAggServerState) -> KeyRoster:
    """End of ``advertise_keys``: the roster every node receives (at least ``max(t, n_min)``
    advertisements, else :class:`TooFewSurvivorsError`)."""
    if state.roster is not None:
        return state.roster
    if len(state.advertisements) < state.config.required_survivors:
        raise TooFewSurvivorsError(
            f"{len(state.advertisements)} nodes advertised keys; the round needs "
            f"{state.config.required_survivors}"
        )
    state.roster = KeyRoster(
        round_id=state.config.round_id,
        advertisements=tuple(state.advertisements[n] for n in sorted(state.advertisements)),
    )
    return state.roster


def roster_for(state: SecAggServerState, node_id: str) -> KeyRoster:
    """End of ``advertise_keys``, per node: the roster ``node_id`` needs. With the full graph
    that is :func:`broadcast_roster`; with a sparse graph only the advertisements of the node
    and its neighbours (``O(k)`` instead of ``O(n)`` bytes)."""
    roster = broadcast_roster(state)
    if not state.config.sparse:
        return roster
    wanted = state.config.neighbours_of(node_id) | {node_id}
    return KeyRoster(round_id=roster.round_id,
                     advertisements=tuple(a for a in roster.advertisements
                                          if a.sender in wanted))


# --- share_keys ---------------------------------------------------------------------------


def receive_shares(state: SecAggServerState, message: ShareKeys) -> None:
    """Stage ``share_keys``: accept one node's encrypted shares (one for every other roster
    member, or with a sparse graph for every neighbour in the roster; the coordinator cannot
    read them)."""
    _check_round(state, message.round_id, "shares")
    if state.roster is None:
        raise SecAggStageError("shares received before the key roster was broadcast")
    if state.share_holders:
        raise SecAggStageError("shares were already forwarded")
    members = set(state.advertisements)
    if message.sender not in members:
        raise UnknownSenderError(f"{message.sender!r} is not in the key roster")
    if message.sender in state.share_messages:
        raise ReplayedMessageError(f"{message.sender} already sent its shares")
    recipients = [share.recipient for share in message.shares]
    expected = members & state.config.neighbours_of(message.sender)
    if sorted(recipients) != sorted(expected):
        raise MisaddressedMessageError(
            f"{message.sender}'s shares must be addressed to every other roster member "
            f"{'among its neighbours ' if state.config.sparse else ''}once"
        )
    for share in message.shares:
        _check_round(state, share.round_id, f"a share from {message.sender}")
        if share.sender != message.sender:
            raise MalformedMessageError(f"{message.sender} relays a share of {share.sender}")
    state.share_messages[message.sender] = message


def forward_shares(state: SecAggServerState) -> dict[str, ForwardedShares]:
    """End of ``share_keys``: for every node that sent shares (``U2``), the ciphertexts the
    other members of ``U2`` addressed to it."""
    holders = sorted(state.share_messages)
    if len(holders) < state.config.required_survivors:
        raise TooFewSurvivorsError(
            f"{len(holders)} nodes shared keys; the round needs "
            f"{state.config.required_survivors}"
        )
    state.share_holders = tuple(holders)
    inbox: dict[str, list[object]] = {node: [] for node in holders}
    for sender in holders:
        for share in state.share_messages[sender].shares:
            if share.recipient in inbox:
                inbox[share.recipient].append(share)
    return {
        node: ForwardedShares.model_validate(
            {"round_id": state.config.round_id, "recipient": node, "shares": shares}
        )
        for node, shares in inbox.items()
    }


# --- masked_input -------------------------------------------------------------------------


def receive_masked_input(state: SecAggServerState, message: MaskedInput) -> None:
    """Stage ``masked_input``: accept one node's masked vector for ``message.phase``."""
    _check_round(state, message.round_id, "masked input")
    phase = message.phase
    if not state.share_holders:
        raise SecAggStageError("masked input received before shares were forwarded")
    if phase is SecAggPhase.DOMINANCE:
        if state.dominance_request is None:
            raise SecAggStageError("dominance input received before the dominance request")
        if message.sender not in state.dominance_request.participants:
            raise UnknownSenderError(f"{message.sender!r} is not in the dominance check")
    if phase in state.unmask_requests:
        raise SecAggStageError(f"phase {phase} is already unmasking")
    if message.sender not in state.share_holders:
        raise UnknownSenderError(f"{message.sender!r} did not share keys in this round")
    received = state.masked.setdefault(phase, {})
    if message.sender in received:
        raise ReplayedMessageError(f"{message.sender} already sent its {phase} input")
    received[message.sender] = segments_from_b64(message.words,
                                                 state.config.segments(phase))


def request_unmask(state: SecAggServerState, *, phase: SecAggPhase) -> UnmaskRequest:
    """End of ``masked_input``: survivors (inputs received) and dropped nodes (in ``U2``,
    no input). :class:`TooFewSurvivorsError` if fewer than ``max(t, n_min)`` survive: then
    the noise would be below its calibration, and the round fails cleanly."""
    if phase in state.unmask_requests:
        return state.unmask_requests[phase]
    survivors = sorted(state.masked.get(phase, {}))
    if len(survivors) < state.config.required_survivors:
        raise TooFewSurvivorsError(
            f"{len(survivors)} masked inputs in phase {phase}; the round needs "
            f"{state.config.required_survivors} (threshold {state.config.threshold}, noise "
            f"calibrated for {state.config.min_survivors})"
        )
    dropped = sorted(set(state.share_holders) - set(survivors))
    request = UnmaskRequest(round_id=state.config.round_id, phase=phase,
                            survivors=tuple(survivors), dropped=tuple(dropped))
    state.unmask_requests[phase] = request
    return request


# --- unmask -------------------------------------------------------------------------------


def receive_unmask_response(state: SecAggServerState, message: UnmaskResponse) -> None:
    """Stage ``unmask``: accept one survivor's shares for ``message.phase``."""
    _check_round(state, message.round_id, "unmask response")
    request = state.unmask_requests.get(message.phase)
    if request is None:
        raise SecAggStageError(f"unmask response before the {message.phase} unmask request")
    if message.sender not in request.survivors:
        raise UnknownSenderError(f"{message.sender!r} is not a survivor of {message.phase}")
    responses = state.unmask_responses.setdefault(message.phase, {})
    if message.sender in responses:
        raise ReplayedMessageError(f"{message.sender} already answered the unmask request")
    holders = state.config.holders_of(message.sender, state.share_holders)
    if sorted(message.self_mask_seed_shares) != sorted(holders & set(request.survivors)) or \
            sorted(message.mask_key_shares) != sorted(holders & set(request.dropped)):
        raise MalformedMessageError(f"{message.sender}'s unmask response does not match the "
                                    "request's survivors and dropped nodes")
    x = state.config.x_coordinate(message.sender)
    for share in (*message.self_mask_seed_shares.values(), *message.mask_key_shares.values()):
        if share.x != x:
            raise MalformedMessageError(f"{message.sender} answers with shares of x={share.x}")
        field_element_from_b64(share.value)
    responses[message.sender] = message


def _reconstruct(state: SecAggServerState, responses: list[UnmaskResponse], owner: str,
                 kind: str, coefficients: dict[tuple[int, ...], dict[int, int]]) -> bytes:
    """Rebuild ``owner``'s seed or mask key from the first ``t`` responses (by node id) that
    hold a share of it (every response with the full graph; its holders with a sparse one).
    Lagrange coefficients are cached per set of x-coordinates."""
    threshold = state.config.threshold
    shares = {}
    for response in responses:
        table = response.self_mask_seed_shares if kind == "seed" else response.mask_key_shares
        share = table.get(owner)
        if share is not None:
            shares[share.x] = field_element_from_b64(share.value)
        if len(shares) == threshold:
            break
    if len(shares) < threshold:
        raise TooFewSurvivorsError(
            f"{len(shares)} holders answered for {owner}'s {kind}; reconstruction needs "
            f"{threshold}"
        )
    xs = tuple(sorted(shares))
    if xs not in coefficients:
        coefficients[xs] = lagrange_coefficients_at_zero(xs)
    value = reconstruct_secret(shares, threshold=threshold, coefficients=coefficients[xs])
    return secret_from_int(value)


def unmask_phase(state: SecAggServerState, *, phase: SecAggPhase) -> list[int]:
    """End of ``unmask``: reconstruct the survivors' self-mask seeds and the dropped nodes'
    mask keys from ``t`` responses, remove every mask, and decode the sum of the survivors'
    inputs (fixed-point integers; ``2 * cells`` values in phase ``sum``: noisy sums, then
    contributor counts)."""
    if phase in state.sums:
        return state.sums[phase]
    config = state.config
    request = state.unmask_requests.get(phase)
    if request is None:
        raise SecAggStageError(f"no unmask request for phase {phase}")
    responses = [r for _, r in sorted(state.unmask_responses.get(phase, {}).items())]
    if len(responses) < config.threshold:
        raise TooFewSurvivorsError(
            f"{len(responses)} unmask responses in phase {phase}; reconstruction needs "
            f"{config.threshold}"
        )
    if not config.sparse:
        responses = responses[: config.threshold]
    coefficients: dict[tuple[int, ...], dict[int, int]] = {}
    bits, length = 64, config.vector_length(phase)  # modulo 2**64, segments reduced at the end
    total: RingWords = np.zeros(length, dtype=np.uint64)
    for node in request.survivors:
        total = add_words(total, state.masked[phase][node], modulus_bits=bits)
        seed = _reconstruct(state, responses, node, "seed", coefficients)
        self_mask = expand_mask(self_mask_key(seed, round_id=config.round_id, phase=str(phase)),
                                length=length, modulus_bits=bits)
        total = subtract_words(total, self_mask, modulus_bits=bits)
    for dropped in request.dropped:
        private = x25519_private_from_bytes(
            _reconstruct(state, responses, dropped, "mask", coefficients)
        )
        if x25519_public_b64(private) != state.advertisements[dropped].mask_keys[phase]:
            raise MalformedMessageError(
                f"the shares of {dropped}'s mask key do not reconstruct its advertised key"
            )
        for survivor in request.survivors:
            if survivor not in config.neighbours_of(dropped):
                continue  # not neighbours: they never masked with each other
            key = pairwise_mask_key(
                private, load_x25519_public(state.advertisements[survivor].mask_keys[phase]),
                round_id=config.round_id, phase=str(phase), node_a=dropped, node_b=survivor,
            )
            mask = expand_mask(key, length=length, modulus_bits=bits)
            # The survivor added the mask if its id sorts first, else subtracted it.
            undo = subtract_words if survivor < dropped else add_words
            total = undo(total, mask, modulus_bits=bits)
    state.sums[phase] = decode_segments(total, config.segments(phase))
    return state.sums[phase]


# --- dominance and the result -------------------------------------------------------------


def request_dominance(state: SecAggServerState) -> DominanceRequest:
    """After the sum phase: broadcast the noisy totals of cells with at least
    ``min_contributors`` contributors (others are already suppressed and stay hidden) to the
    nodes whose inputs they contain."""
    if state.dominance_request is not None:
        return state.dominance_request
    if SecAggPhase.SUM not in state.sums:
        raise SecAggStageError("dominance request before the sum phase was unmasked")
    cells = state.config.cells
    sums = state.sums[SecAggPhase.SUM]
    noisy, counts = sums[:cells], sums[cells:]
    state.dominance_request = DominanceRequest(
        round_id=state.config.round_id,
        noisy_totals=tuple(
            total if count >= state.config.min_contributors else None
            for total, count in zip(noisy, counts, strict=True)
        ),
        participants=state.unmask_requests[SecAggPhase.SUM].survivors,
    )
    return state.dominance_request


def finish_round(state: SecAggServerState) -> SecurePoolResult:
    """The round's result: a cell is published only if at least ``min_contributors``
    companies contributed and no company holds more than ``dominance_percent`` % of its
    noisy total. If a node whose input is in the totals did not take part in the dominance
    check, the cells it could dominate are reported ``dominance_unchecked`` (suppressed)."""
    config = state.config
    if SecAggPhase.SUM not in state.sums or SecAggPhase.DOMINANCE not in state.sums:
        raise SecAggStageError("finish_round before both phases were unmasked")
    cells = config.cells
    noisy = state.sums[SecAggPhase.SUM][:cells]
    counts = state.sums[SecAggPhase.SUM][cells:]
    dominant = state.sums[SecAggPhase.DOMINANCE]
    sum_survivors = state.unmask_requests[SecAggPhase.SUM].survivors
    dominance_survivors = state.unmask_requests[SecAggPhase.DOMINANCE].survivors
    complete = set(sum_survivors) <= set(dominance_survivors)
    status = []
    for count, flags in zip(counts, dominant, strict=True):
        if count < config.min_contributors:
            status.append(CellStatus.TOO_FEW_CONTRIBUTORS)
        elif not complete:
            status.append(CellStatus.DOMINANCE_UNCHECKED)
        elif flags > 0:
            status.append(CellStatus.DOMINATED)
        else:
            status.append(CellStatus.PUBLISHED)
    m = len(sum_survivors)
    return SecurePoolResult(
        round_id=config.round_id,
        scale=config.scale,
        noisy_totals=tuple(
            total if s is CellStatus.PUBLISHED else None
            for total, s in zip(noisy, status, strict=True)
        ),
        status=tuple(status),
        contributors=tuple(counts),
        sum_survivors=sum_survivors,
        dominance_survivors=dominance_survivors,
        released_rho=config.released_rho(m),
        noise_std=math.sqrt(m) * config.node_sigma,
    )
