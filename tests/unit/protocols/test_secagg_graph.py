"""The sparse SecAgg+ graph: a permuted Harary graph from the round id, identical at every
participant, and its failure bounds (checked against simulation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocols import SecAggConfig, SecAggParameterError, plan_secagg_round
from protocols._secagg_graph import (
    PRIVACY_FAILURE_BITS,
    ROBUSTNESS_FAILURE_BITS,
    choose_neighbours,
    default_neighbours,
    harary_neighbours,
    sparse_graph_failure_bounds,
    sparse_threshold,
)

IDS = [f"node-{i:03d}" for i in range(30)]


def test_the_graph_is_k_regular_symmetric_and_a_function_of_the_round() -> None:
    graph = harary_neighbours(round_id="a" * 32, node_ids=IDS, neighbours=6)
    assert set(graph) == set(IDS)
    for node, peers in graph.items():
        assert len(peers) == 6 and node not in peers
        assert all(node in graph[peer] for peer in peers)
    # The order the ids come in does not matter; another round gives another graph.
    assert harary_neighbours(round_id="a" * 32, node_ids=IDS[::-1], neighbours=6) == graph
    assert harary_neighbours(round_id="b" * 32, node_ids=IDS, neighbours=6) != graph


def test_the_graph_is_connected() -> None:
    graph = harary_neighbours(round_id="c" * 32, node_ids=IDS, neighbours=2)
    seen, todo = {IDS[0]}, [IDS[0]]
    while todo:
        for peer in graph[todo.pop()]:
            if peer not in seen:
                seen.add(peer)
                todo.append(peer)
    assert seen == set(IDS)


@pytest.mark.parametrize("k", [0, 3, 29, 30])
def test_invalid_neighbour_counts_are_refused(k: int) -> None:
    with pytest.raises(SecAggParameterError):
        harary_neighbours(round_id="a" * 32, node_ids=IDS, neighbours=k)


def test_the_config_gives_the_same_graph_after_the_wire() -> None:
    config = plan_secagg_round(node_ids=IDS, cells=3, clip=10**6, l1_sensitivity=100,
                               rho=0.5, neighbours=8)
    received = SecAggConfig.model_validate_json(config.model_dump_json())
    for node in IDS:
        assert received.neighbours_of(node) == config.neighbours_of(node)
        assert len(config.neighbours_of(node)) == 8
    assert config.threshold == sparse_threshold(nodes=30, neighbours=8)
    assert (8 + 1) / 2 < config.threshold <= 9


def test_a_sparse_threshold_outside_the_neighbourhood_is_refused() -> None:
    config = plan_secagg_round(node_ids=IDS, cells=3, clip=10**6, l1_sensitivity=100,
                               rho=0.5, neighbours=8)
    fields = config.model_dump()
    for bad in (4, 10, 20):  # t must satisfy 9/2 < t <= 9
        with pytest.raises(SecAggParameterError):
            SecAggConfig(**{**fields, "threshold": bad})


def test_the_default_is_the_full_graph_for_small_pools_and_sparse_for_large() -> None:
    assert default_neighbours(10) is None
    assert default_neighbours(50) is None
    small = plan_secagg_round(node_ids=IDS, cells=3, clip=10**6, l1_sensitivity=100, rho=0.5)
    assert small.neighbours is None and small.threshold == 30 - 10
    many = [f"node-{i:03d}" for i in range(100)]
    large = plan_secagg_round(node_ids=many, cells=3, clip=10**6, l1_sensitivity=100, rho=0.5)
    assert (large.neighbours, large.threshold) == default_neighbours(100) == (42, 32)
    forced = plan_secagg_round(node_ids=many, cells=3, clip=10**6, l1_sensitivity=100,
                               rho=0.5, neighbours=None)
    assert forced.neighbours is None and forced.threshold == 100 - 33


@pytest.mark.parametrize("nodes", [76, 100, 300, 1000])
def test_the_chosen_parameters_meet_the_targets(nodes: int) -> None:
    choice = choose_neighbours(nodes)
    assert choice is not None
    k, t = choice
    bounds = sparse_graph_failure_bounds(nodes=nodes, neighbours=k, threshold=t)
    assert bounds.privacy_shares < 2.0**-PRIVACY_FAILURE_BITS
    assert bounds.privacy_connectivity < 2.0**-PRIVACY_FAILURE_BITS
    assert bounds.robustness < 2.0**-ROBUSTNESS_FAILURE_BITS
    # and no smaller even k would do
    if k > 2:
        smaller = sparse_graph_failure_bounds(
            nodes=nodes, neighbours=k - 2,
            threshold=sparse_threshold(nodes=nodes, neighbours=k - 2))
        assert (smaller.privacy > 2.0**-PRIVACY_FAILURE_BITS
                or smaller.robustness >= 2.0**-ROBUSTNESS_FAILURE_BITS)


def _components(graph: dict[str, frozenset[str]], alive: set[str]) -> int:
    seen: set[str] = set()
    count = 0
    for start in alive:
        if start in seen:
            continue
        count += 1
        seen.add(start)
        todo = [start]
        while todo:
            for peer in graph[todo.pop()] & alive:
                if peer not in seen:
                    seen.add(peer)
                    todo.append(peer)
    return count


def test_the_union_bounds_hold_in_simulation() -> None:
    """Small weak parameters, so the failures are frequent enough to count: the simulated
    frequency of each failure must not exceed its bound (beyond sampling error)."""
    n, k, t = 30, 4, 3
    corrupt_fraction, dropout_fraction = 0.2, 0.1
    bounds = sparse_graph_failure_bounds(nodes=n, neighbours=k, threshold=t,
                                         corrupt_fraction=corrupt_fraction,
                                         dropout_fraction=dropout_fraction)
    rng = np.random.default_rng(5)
    trials = 600
    shares = disconnected = stuck = 0
    for trial in range(trials):
        graph = harary_neighbours(round_id=f"{trial:032x}", node_ids=IDS, neighbours=k)
        picked = [IDS[i] for i in rng.permutation(n)]
        corrupt = set(picked[: math.floor(corrupt_fraction * n)])
        dropped = set(picked[len(corrupt): len(corrupt) + math.floor(dropout_fraction * n)])
        shares += any(len(graph[u] & corrupt) >= t for u in IDS if u not in corrupt)
        disconnected += _components(graph, set(IDS) - corrupt - dropped) > 1
        stuck += any(len(graph[u] & dropped) > k - t for u in IDS)
    slack = 3 * math.sqrt(0.25 / trials)
    assert shares / trials <= bounds.privacy_shares + slack
    assert disconnected / trials <= bounds.privacy_connectivity + slack
    assert stuck / trials <= bounds.robustness + slack
    assert shares > 0 and disconnected > 0 and stuck > 0  # the simulation does see failures
