"""The coordinator's secure-aggregation stage functions: validation of every incoming
message, the unmasking arithmetic, dropouts and the suppression rules.

Node messages are produced by the real node stage functions (``node._secagg``)."""

from __future__ import annotations

import pytest

import coordinator._secagg as server
import node._secagg as client
from protocols import (
    CellStatus,
    ForgedMessageError,
    MalformedMessageError,
    MisaddressedMessageError,
    ReplayedMessageError,
    SecAggConfig,
    SecAggPhase,
    SecAggStageError,
    TooFewSurvivorsError,
    UnknownSenderError,
    generate_private_key,
    public_key_b64,
    sign,
)

IDS = ["acme", "bolt", "core", "dune", "echo", "fern"]  # t = 4


def make_config(*, node_sigma: float = 0.5) -> SecAggConfig:
    return SecAggConfig(round_id="9" * 32, node_ids=tuple(IDS), threshold=4, min_survivors=4,
                        cells=3, clip=10**6, node_sigma=node_sigma, l1_sensitivity=10,
                        l2_sensitivity=10)


class Harness:
    """One round's nodes and coordinator state, advanced stage by stage."""

    def __init__(self) -> None:
        self.config = make_config()
        self.keys = {n: generate_private_key() for n in IDS}
        self.public = {n: public_key_b64(k) for n, k in self.keys.items()}
        self.state = server.start_round(config=self.config, identity_keys=self.public)
        self.nodes: dict[str, client.SecAggNodeState] = {}
        self.adverts = {}
        for n in IDS:
            self.nodes[n], self.adverts[n] = client.advertise_keys(
                config=self.config, node_id=n, identity_key=self.keys[n])

    def advertise(self, nodes: list[str] = IDS) -> None:
        for n in nodes:
            server.receive_advertisement(self.state, self.adverts[n])

    def share(self, nodes: list[str]) -> None:
        roster = server.broadcast_roster(self.state)
        for n in nodes:
            server.receive_shares(self.state, client.share_keys(
                self.nodes[n], roster=roster, identity_keys=self.public))

    def mask(self, nodes: list[str], values: dict[str, list[int]]) -> None:
        forwarded = server.forward_shares(self.state)
        for n in nodes:
            server.receive_masked_input(self.state, client.masked_input(
                self.nodes[n], forwarded=forwarded[n], cell_values=values[n]))

    def unmask(self, nodes: list[str], phase: SecAggPhase) -> list[int]:
        request = server.request_unmask(self.state, phase=phase)
        for n in nodes:
            server.receive_unmask_response(self.state, client.unmask(self.nodes[n],
                                                                     request=request))
        return server.unmask_phase(self.state, phase=phase)

    def dominance(self, nodes: list[str]) -> None:
        request = server.request_dominance(self.state)
        for n in nodes:
            server.receive_masked_input(self.state, client.dominance_input(
                self.nodes[n], request=request))


VALUES = {n: [1000 * (i + 1), 0 if i < 4 else 7, 0] for i, n in enumerate(IDS)}


def test_full_round_sums_counts_and_suppresses() -> None:
    h = Harness()
    h.advertise()
    h.share(IDS)
    h.mask(IDS, VALUES)
    sums = h.unmask(IDS, SecAggPhase.SUM)
    tail = h.config.noise_tail_bound
    assert abs(sums[0] - 21_000) <= 6 * tail and abs(sums[1] - 14) <= 6 * tail
    assert sums[2] == pytest.approx(0, abs=6 * tail)
    assert sums[3:] == [6, 2, 0]  # exact contributor counts
    h.dominance(IDS)
    assert h.unmask(IDS, SecAggPhase.DOMINANCE) == [0, 0, 0]
    result = server.finish_round(h.state)
    assert result.status == (CellStatus.PUBLISHED, CellStatus.TOO_FEW_CONTRIBUTORS,
                             CellStatus.TOO_FEW_CONTRIBUTORS)
    assert result.noisy_totals[1:] == (None, None)
    assert result.contributors == (6, 2, 0)
    assert h.state.dominance_request is not None
    assert h.state.dominance_request.noisy_totals[1:] == (None, None)  # never broadcast


def test_dropped_after_sharing_and_after_masking_are_both_recovered() -> None:
    h = Harness()
    h.advertise()
    h.share(IDS)
    h.mask(IDS[:5], VALUES)  # fern shared keys but sent no input
    survivors = IDS[:4]  # echo sent its input, then vanished before unmasking
    sums = h.unmask(survivors, SecAggPhase.SUM)
    assert sums[3:] == [5, 1, 0]
    assert abs(sums[0] - 15_000) <= 5 * h.config.noise_tail_bound
    request = h.state.unmask_requests[SecAggPhase.SUM]
    assert request.survivors == tuple(IDS[:5]) and request.dropped == ("fern",)


def test_advertisements_are_validated() -> None:
    h = Harness()
    other = client.advertise_keys(config=h.config.model_copy(update={"round_id": "8" * 32}),
                                  node_id="acme", identity_key=h.keys["acme"])[1]
    with pytest.raises(ReplayedMessageError):
        server.receive_advertisement(h.state, other)
    forged = h.adverts["acme"].model_copy(update={"encryption_key":
                                                  h.adverts["bolt"].encryption_key})
    with pytest.raises(ForgedMessageError):
        server.receive_advertisement(h.state, forged)
    by_another_key = h.adverts["acme"].model_copy(update={"signature": sign(
        h.keys["bolt"], h.adverts["acme"].signed_payload())})
    with pytest.raises(ForgedMessageError):
        server.receive_advertisement(h.state, by_another_key)
    server.receive_advertisement(h.state, h.adverts["acme"])
    with pytest.raises(ReplayedMessageError):
        server.receive_advertisement(h.state, h.adverts["acme"])
    stranger = h.adverts["bolt"].model_copy(update={"sender": "zed-corp"})
    with pytest.raises(UnknownSenderError):
        server.receive_advertisement(h.state, stranger)


def test_too_few_advertisements_fail_cleanly() -> None:
    h = Harness()
    h.advertise(IDS[:3])
    with pytest.raises(TooFewSurvivorsError, match="needs 4"):
        server.broadcast_roster(h.state)


def test_share_messages_are_validated() -> None:
    h = Harness()
    h.advertise()
    roster = server.broadcast_roster(h.state)
    message = client.share_keys(h.nodes["acme"], roster=roster, identity_keys=h.public)
    with pytest.raises(MisaddressedMessageError):
        server.receive_shares(h.state, message.model_copy(update={"shares": message.shares[1:]}))
    wrong_sender = message.shares[0].model_copy(update={"sender": "bolt"})
    with pytest.raises(MalformedMessageError):
        server.receive_shares(h.state, message.model_copy(
            update={"shares": (wrong_sender, *message.shares[1:])}))
    server.receive_shares(h.state, message)
    with pytest.raises(ReplayedMessageError):
        server.receive_shares(h.state, message)
    with pytest.raises(TooFewSurvivorsError):
        server.forward_shares(h.state)


def test_masked_inputs_are_validated() -> None:
    h = Harness()
    h.advertise()
    h.share(IDS[:5])
    forwarded = server.forward_shares(h.state)
    message = client.masked_input(h.nodes["acme"], forwarded=forwarded["acme"],
                                  cell_values=VALUES["acme"])
    with pytest.raises(MalformedMessageError, match="expected 6 words"):
        server.receive_masked_input(h.state, message.model_copy(update={"words": "AAAA"}))
    with pytest.raises(SecAggStageError):
        server.receive_masked_input(h.state, message.model_copy(
            update={"phase": SecAggPhase.DOMINANCE}))
    server.receive_masked_input(h.state, message)
    with pytest.raises(ReplayedMessageError):
        server.receive_masked_input(h.state, message)
    with pytest.raises(UnknownSenderError):  # fern did not share keys
        server.receive_masked_input(h.state, message.model_copy(update={"sender": "fern"}))
    with pytest.raises(TooFewSurvivorsError):
        server.request_unmask(h.state, phase=SecAggPhase.SUM)


def test_unmask_responses_are_validated_and_too_few_fail_cleanly() -> None:
    h = Harness()
    h.advertise()
    h.share(IDS)
    h.mask(IDS, VALUES)
    request = server.request_unmask(h.state, phase=SecAggPhase.SUM)
    response = client.unmask(h.nodes["acme"], request=request)
    incomplete = response.model_copy(update={"self_mask_seed_shares": {}})
    with pytest.raises(MalformedMessageError):
        server.receive_unmask_response(h.state, incomplete)
    borrowed = client.unmask(h.nodes["bolt"], request=request).model_copy(
        update={"sender": "acme"})
    with pytest.raises(MalformedMessageError, match="x="):
        server.receive_unmask_response(h.state, borrowed)
    server.receive_unmask_response(h.state, response)
    with pytest.raises(ReplayedMessageError):
        server.receive_unmask_response(h.state, response)
    for n in IDS[1:3]:
        server.receive_unmask_response(h.state, client.unmask(h.nodes[n], request=request))
    with pytest.raises(TooFewSurvivorsError, match="needs 4"):
        server.unmask_phase(h.state, phase=SecAggPhase.SUM)


def test_a_node_missing_from_the_dominance_check_suppresses_its_cells() -> None:
    h = Harness()
    h.advertise()
    h.share(IDS)
    h.mask(IDS, VALUES)
    h.unmask(IDS, SecAggPhase.SUM)
    h.dominance(IDS[:5])
    h.unmask(IDS[:5], SecAggPhase.DOMINANCE)
    result = server.finish_round(h.state)
    assert result.status[0] is CellStatus.DOMINANCE_UNCHECKED
    assert result.noisy_totals[0] is None


def test_stages_out_of_order_are_refused() -> None:
    h = Harness()
    with pytest.raises(SecAggStageError):
        server.request_dominance(h.state)
    with pytest.raises(SecAggStageError):
        server.finish_round(h.state)
    with pytest.raises(SecAggStageError):
        server.unmask_phase(h.state, phase=SecAggPhase.SUM)
    with pytest.raises(UnknownSenderError):
        server.start_round(config=h.config, identity_keys={"acme": h.public["acme"]})
