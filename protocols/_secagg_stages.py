"""Stages and parameters of secure aggregation with distributed DP noise (issue #5).

The protocol follows Bonawitz et al. (CCS 2017), in the one-function-per-stage style of
Flower's SecAgg+; both sides use the names below. One *round* pools one query over the
nodes listed in its :class:`SecAggConfig` and runs two *phases* over the same key set-up:

==================  =========================================================================
stage               what happens
==================  =========================================================================
``advertise_keys``  each node sends X25519 public keys (one for encrypting shares, one mask
                    key per phase), signed with its Ed25519 identity key; the coordinator
                    broadcasts the roster of all advertisements.
``share_keys``      each node Shamir-shares its mask private keys and fresh self-mask seeds
                    (threshold ``t``) and sends each peer its shares, encrypted with
                    ChaCha20-Poly1305 under a key only the two of them can derive; the
                    coordinator relays the ciphertexts.
``masked_input``    each node sends its input vector plus its noise share, masked with its
                    self mask and its pairwise masks with every peer that shared keys.
``unmask``          told who survived, each node reveals shares of survivors' self-mask seeds
                    and of dropped nodes' mask keys (never both for one peer); the
                    coordinator reconstructs them, removes the masks and decodes the sum.
==================  =========================================================================

**Graph.** With ``neighbours = None`` (the full graph, Bonawitz) every node masks with and
shares to every other node, threshold ``t`` out of ``n``. With ``neighbours = k`` (SecAgg+,
Bell et al. CCS 2020; :mod:`protocols._secagg_graph`) each node does so only with its ``k``
neighbours in a permuted Harary graph derived from the round id, threshold ``t`` out of its
``k + 1`` holders (its neighbours and itself). :func:`plan_secagg_round` uses the full graph
below about 80 nodes and the sparse one above (:func:`~protocols._secagg_graph.default_neighbours`).

Phase ``sum`` masks ``[cell sums + noise | contributor flags]``; after unmasking it, the
coordinator broadcasts the noisy totals and phase ``dominance`` masks each node's
``(1, 85)`` dominance indicators, then ``unmask`` again. Cells with fewer than
``min_contributors`` contributors, or any dominant company, are suppressed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols._dp import FIXED_POINT_SCALE
from protocols._secagg_encoding import (
    SECAGG_MAX_MODULUS_BITS,
    SECAGG_MIN_COUNT_BITS,
    SECAGG_MIN_MODULUS_BITS,
    Segments,
    check_count_no_overflow,
    check_no_overflow,
    count_bits_for,
    smallest_modulus_bits,
)
from protocols._secagg_errors import SecAggParameterError
from protocols._secagg_graph import (
    default_neighbours,
    harary_neighbours,
    sparse_threshold,
)
from protocols._secagg_noise import (
    NOISE_FAILURE_PROBABILITY,
    calibrate_node_sigma,
    distributed_gaussian_rho,
    noise_tail_bound,
)

__all__ = [
    "DEFAULT_DOMINANCE_PERCENT",
    "DEFAULT_MIN_CONTRIBUTORS",
    "SecAggConfig",
    "SecAggPhase",
    "SecAggStage",
    "dropout_tolerant_threshold",
    "plan_secagg_round",
]

#: A cell is published only if at least this many companies contributed to it.
DEFAULT_MIN_CONTRIBUTORS = 3
#: ... and no single company holds more than this percentage of its (noisy) total.
DEFAULT_DOMINANCE_PERCENT = 85

_NODE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class SecAggStage(StrEnum):
    """The protocol's stages, in order; node and coordinator name them alike."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"


class SecAggPhase(StrEnum):
    """The two secure sums of a round; each has its own mask keys and self-mask seeds."""

    SUM = "sum"  # noisy cell sums and exact contributor flags
    DOMINANCE = "dominance"  # (1, k) dominance indicators against the noisy totals


def dropout_tolerant_threshold(nodes: int) -> int:
    """``t = nodes - floor(nodes / 3)``: up to a third of the nodes may drop out, and
    ``t > nodes / 2`` so no two disjoint groups of responders can each reach it."""
    if nodes < DEFAULT_MIN_CONTRIBUTORS:
        raise SecAggParameterError(f"secure aggregation needs >= 3 nodes, got {nodes}")
    return nodes - nodes // 3


class SecAggConfig(BaseModel):
    """Everything the participants of one round agree on before it starts.

    All values are fixed-point integers in units of ``1 / scale`` of the measure.

    * ``threshold`` (``t``): shares needed to reconstruct a secret, and the least number of
      nodes that must still answer at every stage; ``nodes / 2 < t <= nodes``.
    * ``min_survivors`` (``n_min``): the number of summed inputs the noise is calibrated for;
      the round refuses to unmask with fewer (so the released sum is never less private
      than calibrated). ``n_min = n`` calibrates for no dropout,
      ``n_min = t`` tolerates dropouts at ``sqrt(n / n_min)`` more noise std.
    * ``node_sigma``: each node's discrete Gaussian share parameter ``s``; the sum of
      ``m >= n_min`` shares has variance ``m s^2`` and is :meth:`released_rho`-zCDP.
    * ``clip``: each node's cell value is clipped to ``[0, clip]`` before noise; the
      overflow check ``n (clip + T) < 2**(modulus_bits - 1)`` is enforced here.
    * ``l1_sensitivity``, ``l2_sensitivity``: how much one privacy unit can change one node's
      cell vector (used for accounting only; clipping to ``[0, clip]`` never increases them).
    * ``neighbours`` (``k``): ``None`` for the full graph; else each node masks with and
      shares to its ``k`` neighbours only (:meth:`neighbours_of`), and ``threshold`` is out
      of the ``k + 1`` holders of a node's shares: ``(k + 1) / 2 < t <= k + 1``.
    * ``count_bits``: ``None`` sends contributor flags and dominance indicators as words of
      the sums' modulus; else as ``count_bits``-bit words (:meth:`segments`), which never
      overflow since ``n < 2**(count_bits - 1)`` is enforced here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    round_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    node_ids: tuple[str, ...] = Field(min_length=DEFAULT_MIN_CONTRIBUTORS, max_length=1000)
    threshold: int = Field(ge=2)
    min_survivors: int = Field(ge=1)
    cells: int = Field(ge=1, le=1_000_000)
    modulus_bits: int = Field(default=SECAGG_MAX_MODULUS_BITS, ge=SECAGG_MIN_MODULUS_BITS,
                              le=SECAGG_MAX_MODULUS_BITS)
    scale: int = Field(default=FIXED_POINT_SCALE, ge=1)
    clip: int = Field(ge=1)
    node_sigma: float = Field(ge=0.5, allow_inf_nan=False)
    l1_sensitivity: int = Field(ge=1)
    l2_sensitivity: int = Field(ge=1)
    min_contributors: int = Field(default=DEFAULT_MIN_CONTRIBUTORS, ge=1)
    dominance_percent: int = Field(default=DEFAULT_DOMINANCE_PERCENT, ge=1, le=100)
    neighbours: int | None = Field(default=None, ge=2, le=998)
    count_bits: int | None = Field(default=None, ge=SECAGG_MIN_COUNT_BITS,
                                   le=SECAGG_MAX_MODULUS_BITS)

    @model_validator(mode="after")
    def _check(self) -> Self:
        ids = self.node_ids
        if list(ids) != sorted(set(ids)):
            raise SecAggParameterError("node_ids must be sorted and distinct")
        bad = [node for node in ids if not _NODE_ID.match(node)]
        if bad:
            raise SecAggParameterError(f"invalid node ids: {bad[:3]}")
        n = len(ids)
        if self.neighbours is None:
            if not n / 2 < self.threshold <= n:
                raise SecAggParameterError(
                    f"threshold must satisfy {n}/2 < t <= {n}, got {self.threshold}"
                )
        else:
            k = self.neighbours
            harary_neighbours(round_id=self.round_id, node_ids=ids, neighbours=k)  # checks k
            if not (k + 1) / 2 < self.threshold <= k + 1:
                raise SecAggParameterError(
                    f"with {k} neighbours the threshold must satisfy {k + 1}/2 < t <= {k + 1},"
                    f" got {self.threshold}"
                )
        if self.count_bits is not None:
            check_count_no_overflow(nodes=n, count_bits=self.count_bits)
        if self.min_survivors > n:
            raise SecAggParameterError(f"min_survivors {self.min_survivors} > {n} nodes")
        if self.l2_sensitivity > self.l1_sensitivity:
            raise SecAggParameterError("l2_sensitivity cannot exceed l1_sensitivity")
        check_no_overflow(nodes=n, clip=self.clip, tail_bound=self.noise_tail_bound,
                          modulus_bits=self.modulus_bits)
        return self

    @property
    def nodes(self) -> int:
        """``n``: the number of invited nodes."""
        return len(self.node_ids)

    @property
    def required_survivors(self) -> int:
        """Least number of nodes that must answer at every stage: ``max(t, n_min)``."""
        return max(self.threshold, self.min_survivors)

    @property
    def noise_tail_bound(self) -> int:
        """``T``: every noise draw lies in ``[-T, T]`` except with probability < 2**-40."""
        return noise_tail_bound(node_sigma=self.node_sigma, nodes=self.nodes, cells=self.cells,
                                failure_probability=NOISE_FAILURE_PROBABILITY)

    @property
    def encoded_bound(self) -> int:
        """Largest magnitude a node ever encodes: ``clip + T``."""
        return self.clip + self.noise_tail_bound

    def vector_length(self, phase: SecAggPhase) -> int:
        """Words in a masked input: ``2 * cells`` (sums, flags) or ``cells`` (dominance)."""
        return 2 * self.cells if phase is SecAggPhase.SUM else self.cells

    def segments(self, phase: SecAggPhase) -> Segments:
        """A phase's masked vector layout ``((words, bits), ...)``: phase ``sum`` is the
        noisy sums (``modulus_bits``) then the contributor flags, phase ``dominance`` the
        indicators; flags and indicators use ``count_bits`` (default ``modulus_bits``)."""
        counts = self.count_bits or self.modulus_bits
        if phase is SecAggPhase.SUM:
            return ((self.cells, self.modulus_bits), (self.cells, counts))
        return ((self.cells, counts),)

    @property
    def sparse(self) -> bool:
        """Whether the round uses a sparse communication graph (``neighbours`` set)."""
        return self.neighbours is not None

    def neighbours_of(self, node_id: str) -> frozenset[str]:
        """The nodes ``node_id`` masks with and shares to: every other node (full graph) or
        its neighbours in the round's Harary graph (the same at every participant)."""
        if node_id not in self.node_ids:
            raise SecAggParameterError(f"{node_id!r} is not a participant of the round")
        if self.neighbours is None:
            return frozenset(self.node_ids) - {node_id}
        graph = harary_neighbours(round_id=self.round_id, node_ids=self.node_ids,
                                  neighbours=self.neighbours)
        return graph[node_id]

    def holders_of(self, node_id: str, among: Collection[str]) -> frozenset[str]:
        """Who holds ``node_id``'s shares: itself and its neighbours, restricted to
        ``among`` (e.g. the nodes that shared keys, ``U2``)."""
        members = set(among)
        return frozenset((self.neighbours_of(node_id) | {node_id}) & members)

    def x_coordinate(self, node_id: str) -> int:
        """A node's Shamir x-coordinate: its 1-based position in ``node_ids``."""
        return self.node_ids.index(node_id) + 1

    def released_rho(self, survivors: int | None = None) -> float:
        """zCDP ``rho`` of the released noisy sums when ``survivors`` inputs were summed
        (default ``min_survivors``, the worst case the round accepts); see
        :func:`~protocols.distributed_gaussian_rho`."""
        return distributed_gaussian_rho(
            l1_sensitivity=self.l1_sensitivity,
            l2_sensitivity=self.l2_sensitivity,
            node_sigma=self.node_sigma,
            survivors=self.min_survivors if survivors is None else survivors,
            dimension=self.cells,
        )


def plan_secagg_round(
    *,
    node_ids: list[str] | tuple[str, ...],
    cells: int,
    clip: int,
    l1_sensitivity: int,
    l2_sensitivity: int | None = None,
    rho: float,
    tolerate_dropouts: bool = True,
    modulus_bits: int = SECAGG_MAX_MODULUS_BITS,
    scale: int = FIXED_POINT_SCALE,
    round_id: str | None = None,
    min_contributors: int = DEFAULT_MIN_CONTRIBUTORS,
    dominance_percent: int = DEFAULT_DOMINANCE_PERCENT,
    neighbours: int | Literal["auto"] | None = "auto",
    count_bits: int | Literal["auto"] | None = None,
    compact_sums: bool = False,
) -> SecAggConfig:
    """A :class:`SecAggConfig` whose released sums are ``rho``-zCDP.

    ``tolerate_dropouts`` sets ``n_min = n - floor(n/3)`` (the noise std is ``sqrt(n / n_min)``
    above central when nobody drops); otherwise ``n_min = n`` (central accuracy, but any
    dropout after masking aborts the round).
    ``l2_sensitivity`` defaults to ``l1_sensitivity`` (always valid: ``||x||_2 <= ||x||_1``).

    ``neighbours``: ``"auto"`` (default) is the full graph with ``t = n - floor(n/3)`` unless
    :func:`~protocols._secagg_graph.default_neighbours` picks a sparse graph (about 80 nodes
    and more); ``None`` forces the full graph; an even ``k`` forces a sparse graph with ``k``
    neighbours and the threshold :func:`~protocols._secagg_graph.sparse_threshold`.
    ``count_bits``: ``None`` (default) sends flags and indicators as sum-sized words;
    ``"auto"`` as the smallest whole-byte words that cannot overflow (``count_bits_for``).
    ``compact_sums``: use the smallest whole-byte ``modulus_bits`` the overflow check allows
    instead of ``modulus_bits``.
    """
    ids = tuple(sorted(node_ids))
    n = len(ids)
    full_threshold = dropout_tolerant_threshold(n)
    graph: tuple[int, int] | None
    if neighbours == "auto":
        graph = default_neighbours(n)
    elif neighbours is None:
        graph = None
    else:
        graph = (neighbours, sparse_threshold(nodes=n, neighbours=neighbours))
    threshold = full_threshold if graph is None else graph[1]
    min_survivors = full_threshold if tolerate_dropouts else n
    l2 = l1_sensitivity if l2_sensitivity is None else l2_sensitivity
    node_sigma = calibrate_node_sigma(
        rho=rho,
        l1_sensitivity=l1_sensitivity,
        l2_sensitivity=l2,
        min_survivors=min_survivors,
        dimension=cells,
    )
    if compact_sums:
        modulus_bits = smallest_modulus_bits(
            nodes=n, clip=clip, tail_bound=noise_tail_bound(
                node_sigma=node_sigma, nodes=n, cells=cells,
                failure_probability=NOISE_FAILURE_PROBABILITY))
    return SecAggConfig(
        round_id=round_id or secrets.token_hex(16),
        node_ids=ids,
        threshold=threshold,
        min_survivors=min_survivors,
        neighbours=None if graph is None else graph[0],
        count_bits=count_bits_for(n) if count_bits == "auto" else count_bits,
        cells=cells,
        modulus_bits=modulus_bits,
        scale=scale,
        clip=clip,
        node_sigma=node_sigma,
        l1_sensitivity=l1_sensitivity,
        l2_sensitivity=l2,
        min_contributors=min_contributors,
        dominance_percent=dominance_percent,
    )
