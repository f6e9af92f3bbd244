"""Benchmark entry ``secure_aggregation``: the cost and accuracy of secure aggregation with
distributed discrete Gaussian noise, against the plain pooled path, in the same run.

Per size (nodes x cells) it runs one full secure round in process
(``crimmis_dpn._secure_pool.run_secure_aggregation``: key agreement, Shamir shares, masked
sums and counts, unmasking, the dominance round) and the plain path (each node releases its
vector with ``protocols.laplace_mechanism`` and sends it as JSON; the coordinator parses and
adds them), and compares time and bytes per node and at the coordinator. It then compares
the RMSE of pooled totals at epsilon = 1 (delta = 1e-6, i.e. rho = ``RHO``) of the
distributed noise with that of one central curator and of every node adding full noise.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from bench._harness import Benchmark, Column, EntryResult, RunConfig, Table
from crimmis_dpn._secure_pool import SecureAggregationRun, run_secure_aggregation
from protocols import (
    SecAggConfig,
    SecAggPhase,
    discrete_gaussian_share,
    laplace_mechanism,
    plan_secagg_round,
    zcdp_rho_for_epsilon,
)
from protocols._secagg_graph import sparse_graph_failure_bounds

EPSILON = 1.0
DELTA = 1e-6
RHO = zcdp_rho_for_epsilon(epsilon=EPSILON, delta=DELTA)
#: One site-year's L1 bound: 1,000 t in thousandths (the fixed-point unit).
UNIT_SUM_BOUND_FP = 1_000_000
#: Each node's cell value is clipped to 10,000,000 t.
CLIP_FP = 10**10


@dataclass(frozen=True)
class Size:
    """One benchmarked configuration and how often its secure round is timed.

    ``neighbours``: ``None`` the full graph, an even ``k`` a sparse SecAgg+ graph, ``"auto"``
    what ``plan_secagg_round`` picks. ``packed``: contributor flags and dominance indicators
    in the smallest count words (``count_bits="auto"``) and the sums in the smallest modulus
    the overflow check allows (``compact_sums``); otherwise every word is 64 bits.
    ``accuracy``: also measure the RMSE table's row (baseline sizes only).
    """

    nodes: int
    cells: int
    repeats: int
    neighbours: int | Literal["auto"] | None = None
    packed: bool = False
    accuracy: bool = False


def _log_neighbours(nodes: int) -> int:
    """``2 ceil(log2 n)``: an O(log n) neighbourhood (weaker bounds than the default)."""
    return min(nodes - 2, 2 * math.ceil(math.log2(nodes)))


FULL_SIZES = (
    # The full graph with 64-bit words everywhere (the layout before packing), and the RMSE.
    Size(10, 1000, 3, accuracy=True), Size(50, 1000, 1, accuracy=True),
    Size(100, 1000, 1, accuracy=True),
    # Packed counts and compact sums, full graph.
    Size(10, 1000, 3, packed=True), Size(50, 1000, 1, packed=True),
    Size(100, 1000, 1, packed=True),
    # Sparse graphs, packed: k = 2 ceil(log2 n), and the planner's default at 100 nodes.
    Size(10, 1000, 3, _log_neighbours(10), packed=True),
    Size(50, 1000, 1, _log_neighbours(50), packed=True),
    Size(100, 1000, 1, _log_neighbours(100), packed=True),
    Size(100, 1000, 1, "auto", packed=True),
    # Longer vectors amortize the per-peer costs.
    Size(10, 10_000, 1, packed=True), Size(10, 100_000, 1, packed=True),
)
QUICK_SIZES = (Size(5, 200, 1, accuracy=True), Size(10, 200, 1, accuracy=True),
               Size(10, 200, 1, 4, packed=True))


def node_ids(nodes: int) -> list[str]:
    """``node-000``, ``node-001``, ..."""
    return [f"node-{i:03d}" for i in range(nodes)]


def make_values(nodes: int, cells: int, *, seed: int) -> dict[str, list[int]]:
    """Every node reports every cell: lognormal sizes (median 50,000 t, sigma 0.5), so no
    cell is suppressed and every pooled total is published (seeded NumPy: data, not noise)."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(mean=math.log(5e7), sigma=0.5, size=(nodes, cells))
    clipped = np.minimum(values.round(), CLIP_FP).astype(np.int64)
    return {node: [int(v) for v in row] for node, row in zip(node_ids(nodes), clipped,
                                                              strict=True)}


# --- the plain pooled path ----------------------------------------------------------------


@dataclass(frozen=True)
class PlainRun:
    """One plain pooled round: seconds and bytes per node, at the coordinator, the totals."""

    node_seconds: float
    node_bytes: float
    coordinator_seconds: float
    coordinator_bytes: int
    totals: np.ndarray


def run_plain(values: dict[str, list[int]]) -> PlainRun:
    """Each node: discrete Laplace at epsilon 1 (``laplace_mechanism``), JSON vector out;
    the coordinator parses every vector and adds them."""
    node_seconds, wires = [], []
    for vector in values.values():
        start = time.perf_counter()
        mechanism = laplace_mechanism(sensitivity=UNIT_SUM_BOUND_FP, epsilon=EPSILON)
        wires.append(json.dumps(mechanism.release(vector)))
        node_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    totals = np.sum([np.array(json.loads(wire), dtype=np.int64) for wire in wires], axis=0)
    coordinator_seconds = time.perf_counter() - start
    return PlainRun(
        node_seconds=statistics.fmean(node_seconds),
        node_bytes=statistics.fmean(len(w) for w in wires),
        coordinator_seconds=coordinator_seconds,
        coordinator_bytes=sum(len(w) for w in wires),
        totals=totals,
    )


# --- accuracy -----------------------------------------------------------------------------


def rmse(noisy: Sequence[int | None] | np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error of ``noisy`` against ``truth`` (fixed-point units)."""
    errors = np.array(noisy, dtype=np.float64) - truth
    return float(np.sqrt(np.mean(errors**2)))


def central_sigma() -> float:
    """The one curator's discrete Gaussian parameter for rho at L2 sensitivity B."""
    return UNIT_SUM_BOUND_FP / math.sqrt(2 * RHO)


def sampled_rmse(*, node_sigma: float, nodes: int, cells: int) -> float:
    """RMSE of the sum of ``nodes`` independent OpenDP discrete Gaussian vectors."""
    share = discrete_gaussian_share(node_sigma=node_sigma)
    total = np.zeros(cells, dtype=np.float64)
    for _ in range(nodes):
        total += np.array(share.add_noise([0] * cells), dtype=np.float64)
    return float(np.sqrt(np.mean(total**2)))


# --- the entry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CostRow:
    """Time and bytes of the secure round against the plain path (keys of COST_COLUMNS)."""

    nodes: int
    cells: int
    graph: str
    threshold: int
    privacy_bits: float | None
    layout: str
    secure_node_ms: float
    plain_node_ms: float
    node_time_ratio: float
    secure_coordinator_ms: float
    plain_coordinator_ms: float
    coordinator_time_ratio: float
    secure_node_kib: float
    plain_node_kib: float
    node_bytes_ratio: float
    masked_input_ratio: float
    coordinator_bytes_ratio: float


@dataclass(frozen=True)
class AccuracyRow:
    """RMSE of pooled totals (tonnes) at matched rho (keys of ACCURACY_COLUMNS)."""

    nodes: int
    sigma_t: float
    central_t: float
    distributed_exact_t: float
    exact_ratio: float
    distributed_tolerant_t: float
    tolerant_ratio: float
    tolerant_expected: float
    local_t: float
    local_ratio: float
    plain_laplace_t: float


COST_COLUMNS = (
    Column("nodes", "nodes", "d"),
    Column("cells", "cells", ",d"),
    Column("graph", "graph", numeric=False),
    Column("threshold", "t", "d"),
    Column("privacy_bits", "privacy bound (-log2)", ".0f"),
    Column("layout", "words", numeric=False),
    Column("secure_node_ms", "secure ms / node", ".1f"),
    Column("plain_node_ms", "plain ms / node", ".1f"),
    Column("node_time_ratio", "node time ratio", ".1f"),
    Column("secure_coordinator_ms", "secure coord. ms", ",.0f"),
    Column("plain_coordinator_ms", "plain coord. ms", ",.1f"),
    Column("coordinator_time_ratio", "coord. time ratio", ".1f"),
    Column("secure_node_kib", "secure KiB / node (sent+recv)", ",.1f"),
    Column("plain_node_kib", "plain KiB / node", ",.1f"),
    Column("node_bytes_ratio", "node bytes ratio", ".1f"),
    Column("masked_input_ratio", "sum-phase input / plain answer", ".2f"),
    Column("coordinator_bytes_ratio", "coord. bytes ratio", ".1f"),
)
ACCURACY_COLUMNS = (
    Column("nodes", "nodes", "d"),
    Column("sigma_t", "central sigma (t)", ",.0f"),
    Column("central_t", "central RMSE (t)", ",.0f"),
    Column("distributed_exact_t", "distributed, n_min = n (t)", ",.0f"),
    Column("exact_ratio", "/ sigma", ".3f"),
    Column("distributed_tolerant_t", "distributed, n_min = ceil(2n/3) (t)", ",.0f"),
    Column("tolerant_ratio", "/ sigma", ".3f"),
    Column("tolerant_expected", "expected sqrt(n/n_min)", ".3f"),
    Column("local_t", "local, full noise per node (t)", ",.0f"),
    Column("local_ratio", "/ sigma", ".2f"),
    Column("plain_laplace_t", "plain Laplace eps=1 (t)", ",.0f"),
)


def _secure_costs(run: SecureAggregationRun) -> tuple[float, float, float]:
    """Mean seconds per node, coordinator seconds, mean bytes (sent + received) per node."""
    nodes = list(run.node_seconds)
    per_node_bytes = [run.node_bytes_sent[n] + run.node_bytes_received.get(n, 0)
                      for n in nodes]
    return (statistics.fmean(run.node_seconds.values()), run.coordinator_seconds,
            statistics.fmean(per_node_bytes))


def _sum_phase_input_bytes(run: SecureAggregationRun) -> float:
    """Mean serialized size of a node's sum-phase masked input."""
    sizes = [len(m.model_dump_json()) for m in run.transcript
             if type(m).__name__ == "MaskedInput" and getattr(m, "phase", "") == "sum"]
    return statistics.fmean(sizes)


def _config(size: Size, *, tolerate_dropouts: bool) -> SecAggConfig:
    return plan_secagg_round(node_ids=node_ids(size.nodes), cells=size.cells, clip=CLIP_FP,
                             l1_sensitivity=UNIT_SUM_BOUND_FP, rho=RHO,
                             tolerate_dropouts=tolerate_dropouts, neighbours=size.neighbours,
                             count_bits="auto" if size.packed else None,
                             compact_sums=size.packed)


def _graph_columns(config: SecAggConfig) -> tuple[str, float | None]:
    """The graph's name and its privacy failure bound in bits (sparse graphs only: the full
    graph's guarantees are deterministic)."""
    if config.neighbours is None:
        return "full", None
    bounds = sparse_graph_failure_bounds(nodes=config.nodes, neighbours=config.neighbours,
                                         threshold=config.threshold)
    return f"k={config.neighbours}", -math.log2(max(bounds.privacy, 1e-300))


def measure_size(size: Size, config: RunConfig) -> tuple[CostRow, AccuracyRow | None]:
    """Time and size one secure round (dropout-tolerant, the default) and the plain path;
    then (baseline sizes) the accuracy of both calibrations, central and local noise."""
    values = make_values(size.nodes, size.cells, seed=config.seed + size.nodes)
    truth = np.sum(list(values.values()), axis=0).astype(np.float64)
    tolerant = _config(size, tolerate_dropouts=True)
    secure_runs = [run_secure_aggregation(config=tolerant, node_values=values)
                   for _ in range(size.repeats)]
    plain_runs = [run_plain(values) for _ in range(max(3, size.repeats))]
    node_s = statistics.median(_secure_costs(r)[0] for r in secure_runs)
    coordinator_s = statistics.median(_secure_costs(r)[1] for r in secure_runs)
    node_bytes = _secure_costs(secure_runs[0])[2]
    plain_node_s = statistics.median(p.node_seconds for p in plain_runs)
    plain_coordinator_s = statistics.median(p.coordinator_seconds for p in plain_runs)
    plain = plain_runs[0]
    run = secure_runs[0]
    coordinator_bytes = run.coordinator_bytes_received + run.coordinator_bytes_sent
    graph, privacy_bits = _graph_columns(tolerant)
    sum_bits, count_bits = (bits for _, bits in tolerant.segments(SecAggPhase.SUM))
    cost = CostRow(
        nodes=size.nodes, cells=size.cells, graph=graph, threshold=tolerant.threshold,
        privacy_bits=privacy_bits, layout=f"{sum_bits}+{count_bits}",
        secure_node_ms=1000 * node_s, plain_node_ms=1000 * plain_node_s,
        node_time_ratio=node_s / plain_node_s,
        secure_coordinator_ms=1000 * coordinator_s,
        plain_coordinator_ms=1000 * plain_coordinator_s,
        coordinator_time_ratio=coordinator_s / plain_coordinator_s,
        secure_node_kib=node_bytes / 1024, plain_node_kib=plain.node_bytes / 1024,
        node_bytes_ratio=node_bytes / plain.node_bytes,
        masked_input_ratio=_sum_phase_input_bytes(run) / plain.node_bytes,
        coordinator_bytes_ratio=coordinator_bytes / plain.coordinator_bytes,
    )
    if not size.accuracy:
        return cost, None
    # Accuracy at matched rho: the protocol's own outputs for both calibrations.
    exact = _config(size, tolerate_dropouts=False)
    exact_run = run_secure_aggregation(config=exact, node_values=values)
    central = sampled_rmse(node_sigma=central_sigma(), nodes=1, cells=size.cells)
    local = sampled_rmse(node_sigma=central_sigma(), nodes=size.nodes, cells=size.cells)
    distributed_exact = rmse(exact_run.result.noisy_totals, truth)
    distributed_tolerant = rmse(run.result.noisy_totals, truth)
    sigma = central_sigma()
    accuracy = AccuracyRow(
        nodes=size.nodes,
        sigma_t=sigma / 1000,
        central_t=central / 1000,
        distributed_exact_t=distributed_exact / 1000,
        exact_ratio=distributed_exact / sigma,
        distributed_tolerant_t=distributed_tolerant / 1000,
        tolerant_ratio=distributed_tolerant / sigma,
        tolerant_expected=math.sqrt(size.nodes / tolerant.min_survivors),
        local_t=local / 1000,
        local_ratio=local / sigma,
        plain_laplace_t=rmse(plain.totals, truth) / 1000,
    )
    return cost, accuracy


def findings(costs: Sequence[CostRow], accuracy: Sequence[AccuracyRow]) -> list[str]:
    """Markdown notes stating the measured ratios against the issue's targets."""

    def label(c: CostRow) -> str:
        return f"{c.nodes} x {c.cells:,} {c.graph} {c.layout}"

    node_bytes = "; ".join(f"{c.node_bytes_ratio:.2f}x ({label(c)})" for c in costs)
    node_time = "; ".join(f"{c.node_time_ratio:.1f}x ({label(c)})" for c in costs)
    best = min(costs, key=lambda c: c.node_bytes_ratio)
    exact = ", ".join(f"{a.exact_ratio:.3f} at {a.nodes}" for a in accuracy)
    tolerant = ", ".join(f"{a.tolerant_ratio:.3f} at {a.nodes}" for a in accuracy)
    versus_plain = ", ".join(f"{a.plain_laplace_t / a.distributed_exact_t:.1f}x at {a.nodes}"
                             for a in accuracy)
    bytes_verdict = ("met" if all(c.node_bytes_ratio <= 1.3 for c in costs)
                     else "**not met**")
    accuracy_verdict = ("met" if all(a.exact_ratio <= 1.1 for a in accuracy)
                        else "**not met**")
    return [
        f"**Result.** Communication per node, secure / plain: {node_bytes}. The issue's "
        f"target of 1.3x is {bytes_verdict} at every size; the best row is "
        f"{best.node_bytes_ratio:.2f}x ({label(best)}). Key advertisement, the roster and the "
        "Shamir shares grow with the number of peers (n - 1, or k with a sparse graph) and "
        "dominate vectors of 1,000 cells; the sum-phase masked input alone is the 'input / "
        "plain answer' column, and long vectors amortize the per-peer part. Time per node, "
        f"secure / plain: {node_time}.",
        f"**Accuracy.** RMSE / central sigma at matched rho with n_min = n: {exact} nodes "
        f"(target 1.1x: {accuracy_verdict}; deviations from 1 are the sampling error of "
        "1,000 cells, about 2%). With the dropout-tolerant calibration (the protocol's "
        f"default): {tolerant}, as expected from sqrt(n / n_min) when nobody drops out.",
        "**Against today's path.** With L2 = L1 sensitivity (one site may put its whole bound "
        "in one cell) a Gaussian at (1, 1e-6) needs sigma = B / sqrt(2 rho), about 4.5 B, "
        "where one curator's Laplace at epsilon 1 has std 1.4 B; the plain path sums n "
        "Laplace noises (std sqrt(2n) B). So secure aggregation beats the plain path's "
        "accuracy from about 10 nodes on, and by sqrt(2n) / 4.5 beyond "
        f"({versus_plain} nodes, plain RMSE / distributed RMSE), while also hiding each "
        "node's answer.",
    ]


def run(config: RunConfig) -> EntryResult:
    """Measure every size (quick: small sizes only)."""
    sizes = QUICK_SIZES if config.quick else FULL_SIZES
    costs, accuracy = [], []
    for size in sizes:
        cost, acc = measure_size(size, config)
        costs.append(cost)
        if acc is not None:
            accuracy.append(acc)
    return EntryResult(
        tables=[
            Table(COST_COLUMNS, [asdict(c) for c in costs]),
            Table(ACCURACY_COLUMNS, [asdict(a) for a in accuracy],
                  title=f"RMSE of pooled totals at epsilon {EPSILON:g}, delta {DELTA:g} "
                        f"(rho {RHO:.4f}), sensitivity {UNIT_SUM_BOUND_FP / 1000:,.0f} t"),
        ],
        notes=findings(costs, accuracy),
    )


DESCRIPTION = f"""
What it measures: one round of secure aggregation with distributed discrete Gaussian noise
(docs/secure-aggregation.md), run in process by `crimmis_dpn._secure_pool` through every
message's JSON wire form: X25519 key advertisement (Ed25519-signed), Shamir shares of mask
keys and self-mask seeds encrypted node to node, masked noisy sums plus contributor flags,
unmasking, then the (1, 85) dominance round (the coordinator broadcasts the noisy totals,
each node sends one masked indicator per cell) and its unmasking.

Variants (columns *graph*, *t*, *words*): **full** is the full graph (every node masks with
and shares to every other, t = n - floor(n/3)); **k=...** a sparse SecAgg+ graph (permuted
Harary graph from the round id, t out of the k + 1 holders, `protocols._secagg_graph`;
k = 2 ceil(log2 n), and k = 42 at 100 nodes, what `plan_secagg_round` picks by default);
*privacy bound* is -log2 of the union bound on the coordinator learning more than the
pooled sum with a fifth of the nodes colluding and a tenth dropping out (full graph:
deterministic, no bound). *words* is the bits of a sum word + a count word: 64+64 is the
layout the live path uses; e.g. 40+8 is the smallest sum modulus the overflow check allows
plus 8-bit contributor flags and dominance indicators (`count_bits="auto"`,
`compact_sums=True`). Against it, in the same run, the plain pooled path:
each node releases its vector with `protocols.laplace_mechanism` (discrete Laplace, epsilon
{EPSILON:g}, sensitivity {UNIT_SUM_BOUND_FP / 1000:,.0f} t) and sends it as a JSON list; the
coordinator parses and adds the lists.

Data: every node reports every cell (seeded lognormal, median 50,000 t), so every cell is
published. Noise: epsilon {EPSILON:g} at delta {DELTA:g}, i.e. rho = {RHO:.5f} (zCDP, the
node accounting's conversion), L1 = L2 sensitivity {UNIT_SUM_BOUND_FP / 1000:,.0f} t.

How to read it:

- **Time per node**: mean over nodes of the seconds a node spends in its stage functions
  (including parsing what it receives), median over repeats; **plain**: building the Laplace
  mechanism, sampling and `json.dumps`. **Coordinator**: all its stage functions (secure) or
  parsing and adding the vectors (plain). The simulated nodes run one after another on one
  machine; in a real pool they run in parallel, so a node's time is what matters.
- **Bytes**: serialized JSON of every message; per node, sent plus received (secure) against
  the answer sent (plain). 'sum-phase input / plain answer' compares only the masked input
  of the sum phase with the plain answer: the part that grows with cells.
- **RMSE** of the pooled totals against the exact sums, in tonnes, at matched rho. Ratios
  are to *central sigma* = B / sqrt(2 rho), the standard deviation of one curator's
  discrete Gaussian (its sampled RMSE, from OpenDP, is shown next to it). *Distributed* is
  what the protocol released: with n_min = n each node adds sigma^2 / n; with the
  dropout-tolerant n_min = ceil(2n/3) each adds sigma^2 / n_min, a sqrt(n / n_min) larger
  std when nobody drops out. *Local* is every node adding the full sigma^2 (what a node must
  do without secure aggregation to get the same rho alone). *Plain Laplace* is today's path
  (pure epsilon = 1 per node, no delta): a stronger per-node guarantee, so not a matched
  comparison, shown for reference.
"""

BENCHMARK = Benchmark(
    name="secure_aggregation",
    title="Secure aggregation with distributed DP noise vs the plain pooled path",
    description=DESCRIPTION,
    run=run,
)
