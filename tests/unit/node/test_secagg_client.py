"""The node's secure-aggregation stage functions, driven without a coordinator: the tests
build the coordinator's broadcasts by hand, then tamper with them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node._secagg import (
    SecAggNodeState,
    advertise_keys,
    dominance_input,
    masked_input,
    share_keys,
    unmask,
)
from protocols import (
    DominanceRequest,
    ForgedMessageError,
    ForwardedShares,
    KeyRoster,
    MalformedMessageError,
    MisaddressedMessageError,
    ReplayedMessageError,
    SecAggConfig,
    SecAggParameterError,
    SecAggPhase,
    SecAggStageError,
    ShareKeys,
    TooFewSurvivorsError,
    UnknownSenderError,
    UnmaskRefusedError,
    UnmaskRequest,
    generate_private_key,
    plan_secagg_round,
    public_key_b64,
    words_from_b64,
)

IDS = ["acme", "bolt", "core", "dune"]


@dataclass
class Round:
    config: SecAggConfig
    keys: dict[str, Ed25519PrivateKey]
    public: dict[str, str]
    states: dict[str, SecAggNodeState]
    roster: KeyRoster
    shares: dict[str, ShareKeys]

    def forwarded(self, node: str) -> ForwardedShares:
        """What the coordinator forwards to ``node``: every share addressed to it."""
        return ForwardedShares(
            round_id=self.config.round_id, recipient=node,
            shares=tuple(s for m in self.shares.values() for s in m.shares
                         if s.recipient == node),
        )


def make_round(*, round_id: str = "1" * 32) -> Round:
    config = plan_secagg_round(node_ids=IDS, cells=5, clip=10**6, l1_sensitivity=100,
                               rho=0.5, round_id=round_id)
    keys = {node: generate_private_key() for node in IDS}
    public = {node: public_key_b64(key) for node, key in keys.items()}
    states, adverts = {}, []
    for node in IDS:
        states[node], advert = advertise_keys(config=config, node_id=node,
                                              identity_key=keys[node])
        adverts.append(advert)
    roster = KeyRoster(round_id=config.round_id, advertisements=tuple(adverts))
    shares = {node: share_keys(states[node], roster=roster, identity_keys=public)
              for node in IDS}
    return Round(config, keys, public, states, roster, shares)


def fresh_state(r: Round, node: str = "acme") -> SecAggNodeState:
    """A new state for ``node`` whose advertisement is the one already in the roster."""
    state = r.states[node]
    return SecAggNodeState(
        config=state.config, node_id=node, identity_key=state.identity_key,
        encryption_key=state.encryption_key, mask_keys=state.mask_keys,
        self_mask_seeds=state.self_mask_seeds, advertisement=state.advertisement,
    )


def test_a_node_outside_the_round_cannot_advertise() -> None:
    r = make_round()
    with pytest.raises(UnknownSenderError):
        advertise_keys(config=r.config, node_id="eve-corp", identity_key=r.keys["acme"])


def test_shares_go_to_every_peer_encrypted() -> None:
    r = make_round()
    message = r.shares["acme"]
    assert sorted(s.recipient for s in message.shares) == ["bolt", "core", "dune"]
    # The ciphertexts are not the plaintext JSON (no share value shows through).
    own = r.states["acme"].peer_shares["acme"][SecAggPhase.SUM].mask_key.value
    assert all(own not in s.ciphertext for s in message.shares)


def test_a_forged_roster_signature_is_refused() -> None:
    r = make_round()
    adverts = list(r.roster.advertisements)
    forged = adverts[1].model_copy(update={"encryption_key": adverts[2].encryption_key})
    roster = r.roster.model_copy(update={"advertisements": (adverts[0], forged, *adverts[2:])})
    with pytest.raises(ForgedMessageError, match="bolt"):
        share_keys(fresh_state(r), roster=roster, identity_keys=r.public)


def test_a_roster_signed_by_the_wrong_identity_is_refused() -> None:
    r = make_round()
    wrong = {**r.public, "core": public_key_b64(generate_private_key())}
    with pytest.raises(ForgedMessageError, match="core"):
        share_keys(fresh_state(r), roster=r.roster, identity_keys=wrong)


def test_a_roster_of_another_round_or_with_repeats_is_refused() -> None:
    r = make_round()
    with pytest.raises(ReplayedMessageError):
        share_keys(fresh_state(r), roster=r.roster.model_copy(update={"round_id": "2" * 32}),
                   identity_keys=r.public)
    repeated = (*r.roster.advertisements, r.roster.advertisements[1])
    with pytest.raises(ReplayedMessageError, match="twice"):
        share_keys(fresh_state(r), roster=r.roster.model_copy(
            update={"advertisements": repeated}), identity_keys=r.public)
    other = make_round(round_id="3" * 32)
    mixed = (*r.roster.advertisements[:3], other.roster.advertisements[3])
    with pytest.raises(ReplayedMessageError, match="round"):
        share_keys(fresh_state(r), roster=r.roster.model_copy(update={"advertisements": mixed}),
                   identity_keys=r.public)


def test_a_roster_without_this_nodes_keys_or_too_small_is_refused() -> None:
    r = make_round()
    others = r.roster.advertisements[1:]
    with pytest.raises(ForgedMessageError, match="own"):
        share_keys(fresh_state(r), roster=r.roster.model_copy(update={"advertisements": others}),
                   identity_keys=r.public)
    small = r.roster.advertisements[:2]
    with pytest.raises(TooFewSurvivorsError):
        share_keys(fresh_state(r), roster=r.roster.model_copy(update={"advertisements": small}),
                   identity_keys=r.public)


def test_share_keys_twice_is_a_stage_error() -> None:
    r = make_round()
    with pytest.raises(SecAggStageError):
        share_keys(r.states["acme"], roster=r.roster, identity_keys=r.public)


def test_masked_input_is_the_right_length_and_uses_every_share() -> None:
    r = make_round()
    message = masked_input(r.states["acme"], forwarded=r.forwarded("acme"),
                           cell_values=[1, 2, 3, 0, 10**7])
    words = words_from_b64(message.words, length=10, modulus_bits=64)
    assert len(words) == 10
    assert r.states["acme"].share_holders == tuple(IDS)
    assert r.states["acme"].clipped_cells == 1  # 10**7 > clip
    with pytest.raises(SecAggStageError):
        masked_input(r.states["acme"], forwarded=r.forwarded("acme"), cell_values=[0] * 5)


def test_misaddressed_shares_are_refused() -> None:
    r = make_round()
    for_bolt = r.forwarded("bolt")
    with pytest.raises(MisaddressedMessageError):
        masked_input(r.states["acme"], forwarded=for_bolt, cell_values=[0] * 5)
    relabelled = r.forwarded("acme").model_copy(update={"shares": for_bolt.shares})
    with pytest.raises(MisaddressedMessageError, match="bolt"):
        masked_input(r.states["acme"], forwarded=relabelled, cell_values=[0] * 5)


def test_a_share_retargeted_to_another_recipient_does_not_authenticate() -> None:
    r = make_round()
    # core's share for bolt, relabelled as if core had sent it to acme.
    stolen = next(s for s in r.shares["core"].shares if s.recipient == "bolt")
    fake = stolen.model_copy(update={"recipient": "acme"})
    forwarded = r.forwarded("acme")
    shares = tuple(fake if s.sender == "core" else s for s in forwarded.shares)
    with pytest.raises(ForgedMessageError, match="authenticate"):
        masked_input(r.states["acme"], forwarded=forwarded.model_copy(update={"shares": shares}),
                     cell_values=[0] * 5)


def test_replayed_shares_are_refused() -> None:
    r = make_round()
    forwarded = r.forwarded("acme")
    twice = forwarded.model_copy(update={"shares": (*forwarded.shares, forwarded.shares[0])})
    with pytest.raises(ReplayedMessageError, match="second share"):
        masked_input(r.states["acme"], forwarded=twice, cell_values=[0] * 5)
    # A share from an earlier round, relabelled with this round's id, fails authentication;
    # left with its own id it is refused as a replay.
    old = make_round(round_id="4" * 32)
    old_share = next(s for s in old.shares["bolt"].shares if s.recipient == "acme")
    shares = tuple(old_share if s.sender == "bolt" else s for s in forwarded.shares)
    with pytest.raises(ReplayedMessageError, match="round"):
        masked_input(fresh_state_with_roster(r), forwarded=forwarded.model_copy(
            update={"shares": shares}), cell_values=[0] * 5)
    relabelled = old_share.model_copy(update={"round_id": r.config.round_id})
    shares = tuple(relabelled if s.sender == "bolt" else s for s in forwarded.shares)
    with pytest.raises(ForgedMessageError):
        masked_input(fresh_state_with_roster(r), forwarded=forwarded.model_copy(
            update={"shares": shares}), cell_values=[0] * 5)


def fresh_state_with_roster(r: Round) -> SecAggNodeState:
    """acme's state after share_keys but before masked_input (a fresh copy)."""
    state = fresh_state(r)
    state.roster = dict(r.states["acme"].roster)
    state.peer_shares = {"acme": r.states["acme"].peer_shares["acme"]}
    return state


def test_tampered_or_malformed_ciphertexts_are_refused() -> None:
    r = make_round()
    forwarded = r.forwarded("acme")
    first = forwarded.shares[0]
    flipped = first.ciphertext[:10] + ("A" if first.ciphertext[10] != "A" else "B") + \
        first.ciphertext[11:]
    shares = (first.model_copy(update={"ciphertext": flipped}), *forwarded.shares[1:])
    with pytest.raises(ForgedMessageError):
        masked_input(r.states["acme"], forwarded=forwarded.model_copy(update={"shares": shares}),
                     cell_values=[0] * 5)
    unknown = first.model_copy(update={"sender": "eve-corp"})
    with pytest.raises(UnknownSenderError):
        masked_input(r.states["acme"], forwarded=forwarded.model_copy(
            update={"shares": (unknown, *forwarded.shares[1:])}), cell_values=[0] * 5)
    short_nonce = first.model_copy(update={"nonce": "AAAA"})
    with pytest.raises(MalformedMessageError):
        masked_input(r.states["acme"], forwarded=forwarded.model_copy(
            update={"shares": (short_nonce, *forwarded.shares[1:])}), cell_values=[0] * 5)


def test_wrong_number_of_cells_is_a_parameter_error() -> None:
    r = make_round()
    with pytest.raises(SecAggParameterError):
        masked_input(r.states["acme"], forwarded=r.forwarded("acme"), cell_values=[1, 2])


def _masked(r: Round) -> None:
    for node in IDS:
        masked_input(r.states[node], forwarded=r.forwarded(node), cell_values=[5] * 5)


def test_unmask_reveals_self_mask_shares_of_survivors_and_key_shares_of_dropped() -> None:
    r = make_round()
    _masked(r)
    request = UnmaskRequest(round_id=r.config.round_id, phase=SecAggPhase.SUM,
                            survivors=("acme", "bolt", "core"), dropped=("dune",))
    response = unmask(r.states["acme"], request=request)
    assert sorted(response.self_mask_seed_shares) == ["acme", "bolt", "core"]
    assert sorted(response.mask_key_shares) == ["dune"]
    x = r.config.x_coordinate("acme")
    assert {s.x for s in response.self_mask_seed_shares.values()} == {x}
    # Asking again with the same split is harmless; swapping a peer's role is refused.
    unmask(r.states["acme"], request=request)
    swapped = request.model_copy(update={"survivors": ("acme", "bolt", "dune"),
                                         "dropped": ("core",)})
    with pytest.raises(UnmaskRefusedError, match="dune's mask-key share was revealed"):
        unmask(r.states["acme"], request=swapped)


def test_unmask_refuses_inconsistent_or_dangerous_requests() -> None:
    r = make_round()
    _masked(r)
    base = {"round_id": r.config.round_id, "phase": SecAggPhase.SUM}
    cases = [
        ({"survivors": ("acme", "bolt", "core"), "dropped": ("core", "dune")}, "both"),
        ({"survivors": ("acme", "bolt", "core"), "dropped": ()}, "split"),
        ({"survivors": ("bolt", "core", "dune"), "dropped": ("acme",)}, "dropped"),
    ]
    for fields, match in cases:
        with pytest.raises(UnmaskRefusedError, match=match):
            unmask(r.states["acme"], request=UnmaskRequest(**base, **fields))
    with pytest.raises(TooFewSurvivorsError):
        unmask(r.states["acme"], request=UnmaskRequest(
            **base, survivors=("acme", "bolt"), dropped=("core", "dune")))
    with pytest.raises(ReplayedMessageError):
        unmask(r.states["acme"], request=UnmaskRequest(
            round_id="5" * 32, phase=SecAggPhase.SUM, survivors=tuple(IDS), dropped=()))
    with pytest.raises(SecAggStageError):  # the dominance input was not sent yet
        unmask(r.states["acme"], request=UnmaskRequest(
            round_id=r.config.round_id, phase=SecAggPhase.DOMINANCE, survivors=tuple(IDS),
            dropped=()))


def test_dominance_input_needs_the_sum_phase_and_the_right_shape() -> None:
    r = make_round()
    _masked(r)
    request = DominanceRequest(round_id=r.config.round_id, noisy_totals=(100,) * 5,
                               participants=tuple(IDS))
    with pytest.raises(SecAggStageError):
        dominance_input(r.states["acme"], request=request)
    unmask(r.states["acme"], request=UnmaskRequest(
        round_id=r.config.round_id, phase=SecAggPhase.SUM, survivors=tuple(IDS), dropped=()))
    with pytest.raises(MalformedMessageError):
        dominance_input(r.states["acme"], request=request.model_copy(
            update={"noisy_totals": (1,)}))
    with pytest.raises(MisaddressedMessageError):
        dominance_input(r.states["acme"], request=request.model_copy(
            update={"participants": ("bolt", "core", "dune")}))
    message = dominance_input(r.states["acme"], request=request)
    assert message.phase is SecAggPhase.DOMINANCE
    assert len(words_from_b64(message.words, length=5, modulus_bits=64)) == 5
