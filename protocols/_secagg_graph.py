"""The sparse communication graph of SecAgg+ (Bell et al., CCS 2020) and its failure bounds.

With the full graph (Bonawitz et al. 2017) every node agrees keys, masks and Shamir-shares
with every other node: ``O(n)`` keys and shares per node. SecAgg+ replaces it with a sparse
``k``-regular graph: a node masks only with its ``k`` neighbours and Shamir-shares its
secrets among them (and itself), threshold ``t`` out of those ``k + 1`` holders.

**The graph.** A Harary graph ``H(k, n)`` (``k`` even) on a ring of positions, node at
position ``p`` adjacent to positions ``p +- 1, ..., p +- k/2 (mod n)``, with the nodes
placed on the ring by a pseudo-random permutation. Bell et al. use exactly this (a Harary
graph with randomly permuted labels). The permutation is a Fisher-Yates shuffle driven by
SHA-256 in counter mode over a seed derived from the round id, ``k`` and the sorted node
ids (:func:`harary_neighbours`): public, so the coordinator and every node compute the same
graph from the round's :class:`~protocols.SecAggConfig` with nothing extra on the wire.

**What it costs in guarantees.** The full graph's guarantees are deterministic (any third
may drop out; the coordinator learns nothing with fewer than ``t`` colluding nodes). The
sparse graph's are probabilistic, over the permutation, and assume the corrupt nodes and
the dropouts are *independent of the graph* (static corruption, chosen before the round id;
dropouts not triggered by seeing the graph). With ``n`` nodes, ``C = floor(gamma n)``
corrupt (colluding with the coordinator) and ``D = floor(delta n)`` dropping out, three
events break the round (:func:`sparse_graph_failure_bounds`, union bounds over the ``n``
nodes, exact hypergeometric tails):

* *privacy, shares*: some honest node has ``>= t`` corrupt neighbours, who could rebuild
  both its self-mask seed and its mask key (its masked input is then open);
  ``<= n P[Hyp(n-1, C, k) >= t]``;
* *privacy, connectivity*: the graph minus the corrupt and dropped nodes falls apart, so
  the coordinator learns the noisy sums of the pieces separately (less noise in each than
  calibrated). On the Harary ring that needs ``k/2`` consecutive positions all removed;
  ``<= n C(C + D, k/2) / C(n, k/2)``;
* *robustness*: some node has more than ``k - t`` of its ``k`` neighbours dropped, so fewer
  than ``t`` holders may answer for it (a dropped node's own share is lost too) and the
  round fails (cleanly: ``TooFewSurvivorsError``); ``<= n P[Hyp(n-1, D, k) >= k + 1 - t]``.

:func:`sparse_threshold` picks, for a given ``k``, the ``t`` with the largest margin below
both targets (privacy bounds below ``2**-40``, robustness below ``2**-20``), and
:func:`choose_neighbours` the smallest even ``k`` whose threshold meets them all (the
style of Bell et al.'s parameters: statistical security ``sigma = 40``, correctness
``eta = 20``), for ``gamma = 1/5`` corrupt and ``delta = 1/10`` dropouts by default.
:func:`default_neighbours` uses it only where it at least halves the number of peers, in
pools of 64 nodes or more (else the full graph): from 76 nodes on.
Example: 100 nodes -> ``k = 42``, ``t = 27``; 1,000 nodes -> ``k = 68``, ``t = 44``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from protocols._secagg_errors import SecAggParameterError

__all__ = [
    "DEFAULT_CORRUPT_FRACTION",
    "DEFAULT_DROPOUT_FRACTION",
    "PRIVACY_FAILURE_BITS",
    "ROBUSTNESS_FAILURE_BITS",
    "SPARSE_GRAPH_MIN_NODES",
    "SparseGraphBounds",
    "choose_neighbours",
    "default_neighbours",
    "graph_seed",
    "harary_neighbours",
    "sparse_graph_failure_bounds",
    "sparse_threshold",
]

#: Fraction of nodes assumed to collude with the coordinator when choosing ``k``.
DEFAULT_CORRUPT_FRACTION = 0.2
#: Fraction of nodes assumed to drop out (independently of the graph) when choosing ``k``.
DEFAULT_DROPOUT_FRACTION = 0.1
#: Both privacy failure bounds must be below ``2**-PRIVACY_FAILURE_BITS``.
PRIVACY_FAILURE_BITS = 40
#: The robustness failure bound must be below ``2**-ROBUSTNESS_FAILURE_BITS``.
ROBUSTNESS_FAILURE_BITS = 20

_DOMAIN = b"crimmis-dpn/secagg/v1|harary-graph"


def graph_seed(*, round_id: str, node_ids: Sequence[str], neighbours: int) -> bytes:
    """The public 32-byte seed of a round's graph: SHA-256 of the round id, ``k`` and the
    sorted node ids (so a different roster or ``k`` gives an unrelated graph)."""
    text = "|".join([round_id, str(neighbours), *sorted(node_ids)]).encode("utf-8")
    return hashlib.sha256(_DOMAIN + b"|" + text).digest()


def _permutation(seed: bytes, size: int) -> list[int]:
    """Fisher-Yates over ``range(size)`` with unbiased draws from SHA-256(seed || counter)."""
    order = list(range(size))
    counter = 0

    def below(bound: int) -> int:
        nonlocal counter
        limit = (1 << 64) - (1 << 64) % bound  # reject the top partial block: no modulo bias
        while True:
            block = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
            value = int.from_bytes(block[:8], "big")
            if value < limit:
                return value % bound

    for i in range(size - 1, 0, -1):
        j = below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


@lru_cache(maxsize=64)
def _graph(round_id: str, node_ids: tuple[str, ...], neighbours: int
           ) -> dict[str, frozenset[str]]:
    n = len(node_ids)
    ring = [node_ids[i] for i in _permutation(
        graph_seed(round_id=round_id, node_ids=node_ids, neighbours=neighbours), n)]
    half = neighbours // 2
    return {
        node: frozenset(ring[(p + d) % n] for d in range(-half, half + 1) if d != 0)
        for p, node in enumerate(ring)
    }


def harary_neighbours(*, round_id: str, node_ids: Sequence[str], neighbours: int
                      ) -> dict[str, frozenset[str]]:
    """Every node's ``k = neighbours`` neighbours in the round's permuted Harary graph.

    Symmetric (``v in N(u)`` iff ``u in N(v)``), ``k``-regular, and a function of the round id,
    ``k`` and the node set only. ``k`` must be even with ``2 <= k <= n - 2``.
    """
    ids = tuple(sorted(node_ids))
    n = len(ids)
    if neighbours % 2 or not 2 <= neighbours <= n - 2:
        raise SecAggParameterError(
            f"a sparse graph needs an even number of neighbours in [2, {n - 2}], got "
            f"{neighbours} (use the full graph, neighbours=None, instead)"
        )
    return _graph(round_id, ids, neighbours)


def _hypergeometric_tail(population: int, successes: int, draws: int, at_least: int) -> float:
    """``P[X >= at_least]`` for ``X ~ Hypergeometric(population, successes, draws)``."""
    total = math.comb(population, draws)
    top = min(successes, draws)
    ways = sum(math.comb(successes, i) * math.comb(population - successes, draws - i)
               for i in range(max(at_least, 0), top + 1))
    return ways / total


@dataclass(frozen=True)
class SparseGraphBounds:
    """Union bounds on the failure events of a sparse round (module docstring)."""

    nodes: int
    neighbours: int
    threshold: int
    corrupt_fraction: float
    dropout_fraction: float
    privacy_shares: float
    privacy_connectivity: float
    robustness: float

    @property
    def privacy(self) -> float:
        """Probability bound that the coordinator learns more than the pooled sum."""
        return min(1.0, self.privacy_shares + self.privacy_connectivity)


def sparse_graph_failure_bounds(
    *,
    nodes: int,
    neighbours: int,
    threshold: int,
    corrupt_fraction: float = DEFAULT_CORRUPT_FRACTION,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
) -> SparseGraphBounds:
    """Union bounds over the graph's permutation on the three failure events (module
    docstring) with ``floor(corrupt_fraction n)`` corrupt and ``floor(dropout_fraction n)``
    dropped nodes, chosen independently of the graph."""
    n, k, t = nodes, neighbours, threshold
    if not 0 <= corrupt_fraction < 1 or not 0 <= dropout_fraction < 1:
        raise SecAggParameterError("corrupt and dropout fractions must be in [0, 1)")
    if k % 2 or not 2 <= k <= n - 2 or not (k + 1) / 2 < t <= k + 1:
        raise SecAggParameterError(f"invalid sparse graph: n={n}, k={k}, t={t}")
    corrupt = math.floor(corrupt_fraction * n)
    dropped = math.floor(dropout_fraction * n)
    removed = min(n, corrupt + dropped)
    shares = n * _hypergeometric_tail(n - 1, corrupt, k, t)
    connectivity = n * math.comb(removed, k // 2) / math.comb(n, k // 2)
    robustness = n * _hypergeometric_tail(n - 1, dropped, k, k + 1 - t)
    return SparseGraphBounds(
        nodes=n, neighbours=k, threshold=t, corrupt_fraction=corrupt_fraction,
        dropout_fraction=dropout_fraction, privacy_shares=min(1.0, shares),
        privacy_connectivity=min(1.0, connectivity), robustness=min(1.0, robustness),
    )


def _bits(probability: float) -> float:
    return -math.log2(max(probability, 1e-300))


def _threshold_margin(bounds: SparseGraphBounds) -> float:
    """The weaker of the two bounds that depend on ``t``, as a fraction of its target in
    bits (``-log2(bound) / target``; at least 1 when both are met)."""
    return min(_bits(bounds.privacy_shares) / PRIVACY_FAILURE_BITS,
               _bits(bounds.robustness) / ROBUSTNESS_FAILURE_BITS)


def _margin(bounds: SparseGraphBounds) -> float:
    """The weakest of the three bounds as a fraction of its target (>= 1: all met)."""
    return min(_threshold_margin(bounds),
               _bits(bounds.privacy_connectivity) / PRIVACY_FAILURE_BITS)


@lru_cache(maxsize=1024)
def sparse_threshold(
    *,
    nodes: int,
    neighbours: int,
    corrupt_fraction: float = DEFAULT_CORRUPT_FRACTION,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
) -> int:
    """The threshold ``t`` in ``((k + 1)/2, k + 1]`` for which the weaker of the collusion
    bound and the robustness bound is furthest below its target, measured in bits as a
    fraction of the target's (ties: the larger ``t``, which favours privacy). If any ``t``
    meets every target, this one does."""
    k = neighbours
    candidates = range(k // 2 + 1, k + 2)
    return max(candidates, key=lambda t: (_threshold_margin(sparse_graph_failure_bounds(
        nodes=nodes, neighbours=k, threshold=t, corrupt_fraction=corrupt_fraction,
        dropout_fraction=dropout_fraction)), t))


@lru_cache(maxsize=256)
def choose_neighbours(
    nodes: int,
    *,
    corrupt_fraction: float = DEFAULT_CORRUPT_FRACTION,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
) -> tuple[int, int] | None:
    """``(k, t)``: the smallest even ``k`` whose :func:`sparse_threshold` meets the module's
    targets; ``None`` if no ``k <= n - 2`` does (only the full graph gives the guarantees)."""
    for k in range(2, nodes - 1, 2):
        t = sparse_threshold(nodes=nodes, neighbours=k, corrupt_fraction=corrupt_fraction,
                             dropout_fraction=dropout_fraction)
        bounds = sparse_graph_failure_bounds(nodes=nodes, neighbours=k, threshold=t,
                                             corrupt_fraction=corrupt_fraction,
                                             dropout_fraction=dropout_fraction)
        if _margin(bounds) >= 1:
            return k, t
    return None


#: Pools smaller than this always use the full graph (the fractions' floors are too coarse).
SPARSE_GRAPH_MIN_NODES = 64


def default_neighbours(nodes: int) -> tuple[int, int] | None:
    """The live default: :func:`choose_neighbours` where it at least halves each node's
    peers (``k <= n / 2``) in a pool of at least :data:`SPARSE_GRAPH_MIN_NODES`, else
    ``None`` (the full graph). With the default fractions that is from 76 nodes on."""
    if nodes < SPARSE_GRAPH_MIN_NODES:
        return None
    choice = choose_neighbours(nodes)
    if choice is None or 2 * choice[0] > nodes:
        return None
    return choice
