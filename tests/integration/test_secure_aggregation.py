"""Secure aggregation end to end (in process, through the messages' JSON wire form):
correctness with and without dropouts, what the coordinator's transcript reveals, the noise
scale, refusals of replayed messages, and the release rules."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

import numpy as np
import pytest
from pydantic import BaseModel
from scipy import stats

import coordinator._secagg as server
import node._secagg as client
from crimmis_dpn._secure_pool import DropPoint, run_secure_aggregation
from protocols import (
    CellStatus,
    MaskedInput,
    ReplayedMessageError,
    SecAggConfig,
    SecAggPhase,
    ShareKeys,
    TooFewSurvivorsError,
    UnmaskRefusedError,
    UnmaskResponse,
    encode_values,
    generate_private_key,
    plan_secagg_round,
    public_key_b64,
    zcdp_rho_for_epsilon,
)

RHO = zcdp_rho_for_epsilon(epsilon=1.0, delta=1e-6)
B = 1_000_000  # unit_sum_bound of 1000 t in fixed point (thousandths)


def ids(n: int) -> list[str]:
    return [f"node-{i:03d}" for i in range(n)]


def tiny_noise_config(n: int, cells: int) -> SecAggConfig:
    """Noise of parameter 1/2 per node: sums are exact up to a few units."""
    t = n - n // 3
    return SecAggConfig(round_id="7" * 32, node_ids=tuple(ids(n)), threshold=t,
                        min_survivors=t, cells=cells, clip=10**9, node_sigma=0.5,
                        l1_sensitivity=1, l2_sensitivity=1)


def values_for(n: int, cells: int, seed: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {node: [int(v) for v in rng.integers(1, 10**8, cells)] for node in ids(n)}


def true_sum(values: dict[str, list[int]], nodes: list[str]) -> np.ndarray:
    return np.sum([values[node] for node in nodes], axis=0)


def masked_words(transcript: Sequence[BaseModel]) -> np.ndarray:
    """Every masked word (64-bit) the coordinator received in the sum phase."""
    chunks = [np.frombuffer(base64.b64decode(m.words), dtype="<u8").astype(np.uint64)
              for m in transcript
              if isinstance(m, MaskedInput) and m.phase is SecAggPhase.SUM]
    return np.concatenate(chunks)


def test_sum_is_correct_without_dropouts() -> None:
    config = tiny_noise_config(9, 40)
    values = values_for(9, 40, seed=1)
    run = run_secure_aggregation(config=config, node_values=values)
    totals = np.array(run.result.noisy_totals, dtype=np.int64)
    error = totals - true_sum(values, ids(9))
    assert np.all(np.abs(error) <= 9 * config.noise_tail_bound)
    assert run.result.contributors == (9,) * 40
    assert all(s is CellStatus.PUBLISHED for s in run.result.status)
    assert run.result.sum_survivors == tuple(ids(9))


@pytest.mark.parametrize("point", [DropPoint.BEFORE_SHARE_KEYS, DropPoint.BEFORE_MASKED_INPUT])
def test_a_third_dropping_before_masking_is_recovered(point: DropPoint) -> None:
    config = tiny_noise_config(9, 30)
    values = values_for(9, 30, seed=2)
    dropped = ids(9)[1:4]
    run = run_secure_aggregation(config=config, node_values=values,
                                 dropouts=dict.fromkeys(dropped, point))
    survivors = [n for n in ids(9) if n not in dropped]
    totals = np.array(run.result.noisy_totals, dtype=np.int64)
    assert np.all(np.abs(totals - true_sum(values, survivors)) <= 6 * config.noise_tail_bound)
    assert run.result.contributors == (6,) * 30
    assert run.result.sum_survivors == tuple(survivors)


def test_a_node_dropping_after_masking_is_recovered_and_its_cells_stay_suppressed() -> None:
    config = tiny_noise_config(9, 30)
    values = values_for(9, 30, seed=3)
    dropped = ids(9)[:3]
    run = run_secure_aggregation(config=config, node_values=values,
                                 dropouts=dict.fromkeys(dropped, DropPoint.BEFORE_UNMASK))
    # Its masked input is in the sum (its self mask is rebuilt from the others' shares) ...
    assert run.result.sum_survivors == tuple(ids(9))
    assert run.result.contributors == (9,) * 30
    # ... but it cannot take part in the dominance check, so nothing is published.
    assert set(run.result.status) == {CellStatus.DOMINANCE_UNCHECKED}


def test_dropping_after_masking_recovers_the_exact_sum() -> None:
    config = tiny_noise_config(6, 20)
    values = values_for(6, 20, seed=4)
    keys = {n: generate_private_key() for n in ids(6)}
    # Drive the coordinator by hand to read the decoded sum of the sum phase.
    state = server.start_round(config=config,
                               identity_keys={n: public_key_b64(k) for n, k in keys.items()})
    nodes = {}
    for n in ids(6):
        nodes[n], advert = client.advertise_keys(config=config, node_id=n, identity_key=keys[n])
        server.receive_advertisement(state, advert)
    roster = server.broadcast_roster(state)
    for n in ids(6):
        server.receive_shares(state, client.share_keys(
            nodes[n], roster=roster, identity_keys={m: public_key_b64(k)
                                                    for m, k in keys.items()}))
    forwarded = server.forward_shares(state)
    for n in ids(6):
        server.receive_masked_input(state, client.masked_input(
            nodes[n], forwarded=forwarded[n], cell_values=values[n]))
    request = server.request_unmask(state, phase=SecAggPhase.SUM)
    for n in ids(6)[2:]:  # the first two vanish after masking
        server.receive_unmask_response(state, client.unmask(nodes[n], request=request))
    sums = server.unmask_phase(state, phase=SecAggPhase.SUM)
    error = np.array(sums[:20]) - true_sum(values, ids(6))
    assert np.all(np.abs(error) <= 6 * config.noise_tail_bound)
    assert sums[20:] == [6] * 20


def test_too_many_dropouts_fail_cleanly() -> None:
    config = tiny_noise_config(9, 10)
    values = values_for(9, 10, seed=5)
    with pytest.raises(TooFewSurvivorsError, match="needs 6"):
        run_secure_aggregation(config=config, node_values=values, dropouts=dict.fromkeys(
            ids(9)[:4], DropPoint.BEFORE_MASKED_INPUT))
    with pytest.raises(TooFewSurvivorsError):
        run_secure_aggregation(config=config, node_values=values, dropouts=dict.fromkeys(
            ids(9)[:4], DropPoint.BEFORE_UNMASK))


def test_the_no_dropout_calibration_refuses_to_release_with_a_dropout() -> None:
    config = plan_secagg_round(node_ids=ids(6), cells=10, clip=10**9, l1_sensitivity=B,
                               rho=RHO, tolerate_dropouts=False)
    values = values_for(6, 10, seed=6)
    with pytest.raises(TooFewSurvivorsError, match="noise calibrated for 6"):
        run_secure_aggregation(config=config, node_values=values,
                               dropouts={ids(6)[0]: DropPoint.BEFORE_MASKED_INPUT})


# --- what the coordinator sees ------------------------------------------------------------


def byte_histogram(words: np.ndarray) -> np.ndarray:
    return np.bincount(words.astype("<u8").view(np.uint8), minlength=256)


def test_masked_words_are_uniform_and_the_test_would_see_unmasked_ones() -> None:
    config = plan_secagg_round(node_ids=ids(8), cells=1000, clip=10**9, l1_sensitivity=B,
                               rho=RHO)
    values = {n: [5 * 10**7] * 1000 for n in ids(8)}
    run = run_secure_aggregation(config=config, node_values=values)
    words = masked_words(run.transcript)
    assert words.size == 8 * 2000
    p_bytes = stats.chisquare(byte_histogram(words)).pvalue
    p_top = stats.chisquare(np.bincount((words >> np.uint64(60)).astype(np.int64),
                                        minlength=16)).pvalue
    assert p_bytes > 1e-6 and p_top > 1e-6, (p_bytes, p_top)
    # Power: the same test on the unmasked encoded inputs (plus noise) fails by far.
    unmasked = encode_values([5 * 10**7 + 1234] * 16_000, bound=config.encoded_bound,
                             modulus_bits=64)
    assert stats.chisquare(byte_histogram(unmasked)).pvalue < 1e-100


def test_masked_inputs_do_not_depend_on_the_true_values() -> None:
    config = plan_secagg_round(node_ids=ids(6), cells=1000, clip=10**9, l1_sensitivity=B,
                               rho=RHO)
    small = run_secure_aggregation(config=config,
                                   node_values={n: [1] * 1000 for n in ids(6)})
    large = run_secure_aggregation(config=config,
                                   node_values={n: [10**9] * 1000 for n in ids(6)})
    table = np.vstack([byte_histogram(masked_words(small.transcript)),
                       byte_histogram(masked_words(large.transcript))])
    p_value = stats.chi2_contingency(table).pvalue
    assert p_value > 1e-6, p_value
    # Top nibble of each word: same distribution too.
    tops = [np.bincount((masked_words(r.transcript) >> np.uint64(60)).astype(np.int64),
                        minlength=16) for r in (small, large)]
    assert stats.chi2_contingency(np.vstack(tops)).pvalue > 1e-6


def test_the_transcript_holds_no_readable_share() -> None:
    config = tiny_noise_config(5, 4)
    run = run_secure_aggregation(config=config, node_values=values_for(5, 4, seed=7))
    kinds = {type(m).__name__ for m in run.transcript}
    assert kinds == {"AdvertiseKeys", "ShareKeys", "MaskedInput", "UnmaskResponse"}
    text = "".join(m.model_dump_json() for m in run.transcript
                   if type(m).__name__ == "ShareKeys")
    assert "mask_key" not in text and "self_mask_seed" not in text  # only ciphertexts


# --- noise scale --------------------------------------------------------------------------


@pytest.mark.parametrize("tolerate_dropouts", [False, True])
def test_summed_noise_has_the_calibrated_variance(tolerate_dropouts: bool) -> None:
    """Chi-square test on 4,000 cells: sum(noise^2) / (m s^2) ~ chi2(4000).

    Fails if the variance is off by more than about 10% (two-sided p-value bound 1e-6); the
    dropout-tolerant calibration is 10/7 = 43% above the no-dropout one, so a mix-up fails.
    """
    n, cells = 10, 2000
    config = plan_secagg_round(node_ids=ids(n), cells=cells, clip=10**9, l1_sensitivity=B,
                               rho=RHO, tolerate_dropouts=tolerate_dropouts)
    values = {node: [10**7] * cells for node in ids(n)}
    noise = []
    for _ in range(2):
        run = run_secure_aggregation(config=config, node_values=values)
        noise.append(np.array(run.result.noisy_totals, dtype=np.float64) - n * 10**7)
    all_noise = np.concatenate(noise)
    expected_variance = n * config.node_sigma**2
    central_sigma = B / math.sqrt(2 * RHO)
    if not tolerate_dropouts:
        assert expected_variance == pytest.approx(central_sigma**2, rel=2e-3)
    statistic = float(np.sum(all_noise**2)) / expected_variance
    k = all_noise.size
    p = 2 * min(stats.chi2.cdf(statistic, k), stats.chi2.sf(statistic, k))
    assert p > 1e-6, (statistic / k, p)


# --- replay across rounds -----------------------------------------------------------------


def test_messages_of_another_round_are_refused_by_the_coordinator() -> None:
    config = tiny_noise_config(5, 3)
    run = run_secure_aggregation(config=config, node_values=values_for(5, 3, seed=8))
    other = config.model_copy(update={"round_id": "6" * 32})
    state = server.start_round(config=other, identity_keys={n: "x" for n in ids(5)})
    for message in run.transcript[:1]:
        with pytest.raises(ReplayedMessageError):
            server.receive_advertisement(state, message)  # type: ignore[arg-type]
    masked = next(m for m in run.transcript if isinstance(m, MaskedInput))
    with pytest.raises(ReplayedMessageError):
        server.receive_masked_input(state, masked)


# --- release rules ------------------------------------------------------------------------


def test_suppression_rules_fire_on_crafted_data() -> None:
    """Cell 0: two contributors. Cell 1: one company holds 90%. Cell 2: three balanced.
    Cell 3: one company holds exactly 80% of five (published)."""
    config = plan_secagg_round(node_ids=ids(5), cells=4, clip=10**10, l1_sensitivity=B,
                               rho=RHO)
    big = 10**9  # 1,000,000 t: noise (std ~ 5,000 units) is negligible against it
    values = {
        "node-000": [big, 9 * big, big, 4 * big],
        "node-001": [big, big // 2, big, big // 4],
        "node-002": [0, big // 2, big, big // 4],
        "node-003": [0, 0, 0, big // 4],
        "node-004": [0, 0, 0, big // 4],
    }
    result = run_secure_aggregation(config=config, node_values=values).result
    assert result.status == (CellStatus.TOO_FEW_CONTRIBUTORS, CellStatus.DOMINATED,
                             CellStatus.PUBLISHED, CellStatus.PUBLISHED)
    assert result.contributors == (2, 3, 3, 5)
    assert result.noisy_totals[0] is None and result.noisy_totals[1] is None
    assert result.noisy_totals[2] == pytest.approx(3 * big, abs=10 * result.noise_std)
    assert result.released_rho <= RHO


# --- the sparse SecAgg+ graph and the packed count words -----------------------------------


def sparse_config(n: int, cells: int, *, neighbours: int = 6, threshold: int = 5,
                  count_bits: int | None = None) -> SecAggConfig:
    return SecAggConfig(round_id="5" * 32, node_ids=tuple(ids(n)), threshold=threshold,
                        min_survivors=n - n // 3, cells=cells, clip=10**9, node_sigma=0.5,
                        l1_sensitivity=1, l2_sensitivity=1, neighbours=neighbours,
                        count_bits=count_bits)


def non_adjacent(config: SecAggConfig, count: int) -> list[str]:
    """``count`` nodes no two of which are neighbours (so no node loses two holders)."""
    picked: list[str] = []
    for node in config.node_ids:
        if all(node not in config.neighbours_of(p) and node != p for p in picked):
            picked.append(node)
        if len(picked) == count:
            return picked
    raise AssertionError("not enough non-adjacent nodes")


def test_sparse_graph_sum_is_correct_and_shares_go_to_neighbours_only() -> None:
    config = sparse_config(16, 20, count_bits=8)
    values = values_for(16, 20, seed=11)
    run = run_secure_aggregation(config=config, node_values=values)
    totals = np.array(run.result.noisy_totals, dtype=np.int64)
    assert np.all(np.abs(totals - true_sum(values, ids(16))) <= 16 * config.noise_tail_bound)
    assert run.result.contributors == (16,) * 20
    assert all(s is CellStatus.PUBLISHED for s in run.result.status)
    for message in run.transcript:
        if isinstance(message, ShareKeys):
            assert {s.recipient for s in message.shares} == config.neighbours_of(message.sender)
            assert len(message.shares) == 6
        if isinstance(message, UnmaskResponse):
            holders = config.neighbours_of(message.sender) | {message.sender}
            assert set(message.self_mask_seed_shares) == holders


@pytest.mark.parametrize("point", [DropPoint.BEFORE_SHARE_KEYS, DropPoint.BEFORE_MASKED_INPUT])
def test_sparse_graph_recovers_dropouts_before_masking(point: DropPoint) -> None:
    config = sparse_config(16, 12, count_bits=8)
    values = values_for(16, 12, seed=12)
    dropped = non_adjacent(config, 3)
    run = run_secure_aggregation(config=config, node_values=values,
                                 dropouts=dict.fromkeys(dropped, point))
    survivors = [n for n in ids(16) if n not in dropped]
    totals = np.array(run.result.noisy_totals, dtype=np.int64)
    assert np.all(np.abs(totals - true_sum(values, survivors)) <= 13 * config.noise_tail_bound)
    assert run.result.contributors == (13,) * 12
    assert run.result.sum_survivors == tuple(survivors)


def test_sparse_graph_recovers_the_exact_sum_after_a_dropout_post_masking() -> None:
    config = sparse_config(14, 8)
    values = values_for(14, 8, seed=13)
    dropped = non_adjacent(config, 2)
    run = run_secure_aggregation(config=config, node_values=values,
                                 dropouts=dict.fromkeys(dropped, DropPoint.BEFORE_UNMASK))
    assert run.result.sum_survivors == tuple(ids(14))  # rebuilt from the neighbours' shares
    assert run.result.contributors == (14,) * 8
    assert set(run.result.status) == {CellStatus.DOMINANCE_UNCHECKED}


def test_sparse_graph_fails_cleanly_when_a_neighbourhood_loses_too_many() -> None:
    config = sparse_config(16, 4)  # t = 5 of 7 holders
    victim = ids(16)[0]
    lost = sorted(config.neighbours_of(victim))[:3]  # 4 holders left < t
    with pytest.raises(TooFewSurvivorsError, match="holders"):
        run_secure_aggregation(config=config, node_values=values_for(16, 4, seed=14),
                               dropouts=dict.fromkeys(lost, DropPoint.BEFORE_SHARE_KEYS))


def test_the_planned_default_at_80_nodes_is_sparse_and_survives_a_tenth_dropping() -> None:
    config = plan_secagg_round(node_ids=ids(80), cells=2, clip=10**9, l1_sensitivity=B,
                               rho=RHO, count_bits="auto", compact_sums=True)
    assert config.neighbours == 40 and config.count_bits == 8 and config.modulus_bits < 64
    values = values_for(80, 2, seed=15)
    rng = np.random.default_rng(16)
    dropped = [ids(80)[i] for i in rng.choice(80, size=8, replace=False)]
    run = run_secure_aggregation(config=config, node_values=values,
                                 dropouts=dict.fromkeys(dropped, DropPoint.BEFORE_MASKED_INPUT))
    survivors = [n for n in ids(80) if n not in dropped]
    totals = np.array(run.result.noisy_totals, dtype=np.int64)
    error = totals - true_sum(values, survivors)
    assert np.all(np.abs(error) <= 6 * run.result.noise_std), error
    assert run.result.contributors == (72, 72)


def test_packed_counts_shrink_the_masked_input_and_keep_the_result() -> None:
    values = values_for(6, 50, seed=17)
    sizes = {}
    for count_bits in (None, 8):
        config = SecAggConfig(**{**tiny_noise_config(6, 50).model_dump(),
                                 "count_bits": count_bits})
        run = run_secure_aggregation(config=config, node_values=values)
        assert run.result.contributors == (6,) * 50
        totals = np.array(run.result.noisy_totals, dtype=np.int64)
        assert np.all(np.abs(totals - true_sum(values, ids(6))) <= 6 * config.noise_tail_bound)
        sizes[count_bits] = [len(base64.b64decode(m.words)) for m in run.transcript
                             if isinstance(m, MaskedInput)]
    assert sizes[None] == [100 * 8] * 6 + [50 * 8] * 6
    assert sizes[8] == [50 * 8 + 50] * 6 + [50] * 6


def test_a_sparse_node_refuses_an_unmask_request_that_leaves_out_one_of_its_holders() -> None:
    config = sparse_config(10, 3, neighbours=4, threshold=4)
    keys = {n: generate_private_key() for n in ids(10)}
    public = {n: public_key_b64(k) for n, k in keys.items()}
    state = server.start_round(config=config, identity_keys=public)
    nodes = {}
    for n in ids(10):
        nodes[n], advert = client.advertise_keys(config=config, node_id=n, identity_key=keys[n])
        server.receive_advertisement(state, advert)
    server.broadcast_roster(state)
    for n in ids(10):
        roster = server.roster_for(state, n)
        assert {a.sender for a in roster.advertisements} == config.neighbours_of(n) | {n}
        server.receive_shares(state, client.share_keys(nodes[n], roster=roster,
                                                       identity_keys=public))
    forwarded = server.forward_shares(state)
    values = values_for(10, 3, seed=18)
    for n in ids(10):
        server.receive_masked_input(state, client.masked_input(
            nodes[n], forwarded=forwarded[n], cell_values=values[n]))
    request = server.request_unmask(state, phase=SecAggPhase.SUM)
    victim = ids(10)[0]
    neighbour = sorted(config.neighbours_of(victim))[0]
    bad = request.model_copy(update={"survivors": tuple(
        n for n in request.survivors if n != neighbour)})
    with pytest.raises(UnmaskRefusedError, match="holders"):
        client.unmask(nodes[victim], request=bad)
    # The honest request is answered with the holders' shares only, and the sum decodes.
    for n in ids(10):
        server.receive_unmask_response(state, client.unmask(nodes[n], request=request))
    sums = server.unmask_phase(state, phase=SecAggPhase.SUM)
    assert sums[3:] == [10, 10, 10]
    assert np.all(np.abs(np.array(sums[:3]) - true_sum(values, ids(10)))
                  <= 10 * config.noise_tail_bound)
