"""Secure aggregation over the pull transport: the query, the stage jobs and the replies.

An operator asks for a :class:`SecureAggregateQuery` (an aggregate sum, its privacy target
and the per-node clipping bound). The coordinator plans one round of the protocol
(:func:`protocols.plan_secagg_round`, round id = query id) and, stage by stage, queues one
:class:`SecAggJob` per participating node; nodes fetch them over the ordinary long poll
(envelope kind ``secagg_job``) and answer each with one :class:`SecAggReply` (envelope kind
``secagg_message``). Each job names its ``stage`` (:class:`protocols.SecAggStage`) and,
where it matters, its ``phase`` (:class:`protocols.SecAggPhase`):

=====================  ===========================  ====================================
job (stage, phase)     the job carries              the node replies with
=====================  ===========================  ====================================
``advertise_keys``     the query, the planned       :class:`~protocols.AdvertiseKeys`
                       :class:`SecAggConfig`, the
                       participants' identity keys
``share_keys``         the :class:`KeyRoster`       :class:`~protocols.ShareKeys`
``masked_input, sum``  its :class:`ForwardedShares`  :class:`MaskedRelease` (the masked
                                                    input and the node's ledger receipt)
``unmask, sum``        the :class:`UnmaskRequest`   :class:`~protocols.UnmaskResponse`
``masked_input,        the :class:`DominanceRequest` :class:`MaskedRelease` (no receipt:
dominance``                                         not a DP release)
``unmask, dominance``  the :class:`UnmaskRequest`   :class:`~protocols.UnmaskResponse`
=====================  ===========================  ====================================

A node that will not or cannot take part replies with a ``refusal`` instead (policy,
budget, unknown round after a restart, a protocol check that failed); from then on the
coordinator counts it as a dropout, which the protocol tolerates up to ``floor(n/3)``.

The query's ``statistic`` says what each node puts in: ``sum`` (its bounded cell sums, the
default) or ``sum_of_squares`` (the square of each of its bounded cell totals, for company
concentration: :func:`squares_encoding`, docs/secure-aggregation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols._dp import FIXED_POINT_SCALE
from protocols._key_rotation import KeyRotation
from protocols._ledger import Receipt
from protocols._secagg_messages import (
    AdvertiseKeys,
    DominanceRequest,
    ForwardedShares,
    KeyRoster,
    MaskedInput,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from protocols._secagg_noise import zcdp_rho_for_epsilon
from protocols._secagg_stages import SecAggConfig, SecAggPhase, SecAggStage
from protocols._wire import AggregateQuery, QueryKind

__all__ = [
    "SECAGG_MECHANISM",
    "SECAGG_SQUARES_MECHANISM",
    "SQUARES_SCALES",
    "MaskedRelease",
    "SecAggJob",
    "SecAggRefusal",
    "SecAggReply",
    "SecAggStatistic",
    "SecureAggregateQuery",
    "SquaresEncoding",
    "encode_squares",
    "secagg_step_name",
    "squares_encoding",
]

_HEX32 = r"^[0-9a-f]{32}$"
_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: The mechanism named in a node's ledger entry for its masked input.
SECAGG_MECHANISM = (
    "secure aggregation (SecAgg+-style masking) of bounded fixed-point sums, each node adding "
    "a discrete Gaussian share (OpenDP); zCDP, rho of the pooled sum"
)
#: ... and for a round of statistic ``sum_of_squares``.
SECAGG_SQUARES_MECHANISM = (
    "secure aggregation (SecAgg+-style masking) of the squares of the node's bounded cell "
    "totals, each node adding a discrete Gaussian share (OpenDP); zCDP, rho of the pooled sum "
    "of squares"
)

#: What a node contributes per cell: its bounded cell sum, or the square of it.
SecAggStatistic = Literal["sum", "sum_of_squares"]
#: Fixed-point scales (units per squared measure unit) a ``sum_of_squares`` round may use,
#: finest first: the square of the sums' scale (``FIXED_POINT_SCALE ** 2``) down to 1.
SQUARES_SCALES: tuple[int, ...] = tuple(10**k for k in range(6, -1, -1))


def secagg_step_name(stage: SecAggStage, phase: SecAggPhase | None) -> str:
    """``stage`` or ``stage/phase``, as logs and messages name a step of a round."""
    return str(stage) if phase is None else f"{stage}/{phase}"


class SecureAggregateQuery(BaseModel):
    """A pooled sum computed by secure aggregation (docs/secure-aggregation.md).

    ``query`` must be of kind ``sum``. Its ``epsilon`` with ``delta`` sets the pool-level
    target ``rho = zcdp_rho_for_epsilon(epsilon, delta)`` unless ``rho`` is given. ``clip``
    (measure units) bounds one node's value of one cell (a node's larger values are clipped);
    it bounds the ring encoding, not the privacy, which follows from
    ``query.bounds.unit_sum_bound``. ``tolerate_dropouts`` calibrates the noise for up to a
    third of the nodes dropping out (else any dropout after masking fails the round).

    ``statistic``: ``sum`` (default) pools the nodes' bounded cell sums ``x_i``;
    ``sum_of_squares`` pools ``x_i ** 2``, each node squaring its own cell total clipped to
    ``[0, clip]``: there ``clip`` enters the privacy (the sensitivity is
    :func:`squares_encoding`'s, about ``2 * clip * unit_sum_bound``), so set it to about the
    largest company's cell total, not to the encoding default.
    """

    model_config = _FROZEN

    query: AggregateQuery
    delta: Annotated[float, Field(gt=0, le=1e-3)] = 1e-6
    rho: Annotated[float | None, Field(gt=0, le=10)] = None
    clip: Annotated[float, Field(ge=0.001, le=1e12)] = 1e9
    tolerate_dropouts: bool = True
    statistic: SecAggStatistic = "sum"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.query.kind is not QueryKind.SUM:
            raise ValueError("secure aggregation pools sums: query.kind must be 'sum'")
        return self

    def target_rho(self) -> float:
        """The zCDP ``rho`` the pooled sums are calibrated for."""
        if self.rho is not None:
            return self.rho
        return zcdp_rho_for_epsilon(epsilon=self.query.epsilon, delta=self.delta)


@dataclass(frozen=True)
class SquaresEncoding:
    """How a ``sum_of_squares`` round encodes ``x ** 2`` (see :func:`squares_encoding`).

    ``scale``: fixed-point units per squared measure unit (a node's square is
    ``floor(x ** 2 * scale)``); ``clip``: the largest encoded square, ``clip_fp ** 2 * scale
    // FIXED_POINT_SCALE ** 2``; ``l1_sensitivity``: the encoded L1 (and L2) bound of one
    privacy unit's change of one node's squared cell vector.
    """

    scale: int
    clip: int
    l1_sensitivity: int


def squares_encoding(secure_query: SecureAggregateQuery, *, scale: int) -> SquaresEncoding:
    """The encoding of a ``sum_of_squares`` round at ``scale`` (one of :data:`SQUARES_SCALES`).

    **Sensitivity.** A node's cell total ``x`` is clipped to ``[0, C]`` (``C =
    secure_query.clip``, in measure units) before squaring; one privacy unit (one site-year)
    changes the node's unclipped totals by ``b_c`` per cell with ``sum_c b_c <= B``
    (``B = query.bounds.unit_sum_bound``), and clipping is 1-Lipschitz, so a clipped total
    moves by ``a_c <= min(b_c, C)`` and its square by ``|x'^2 - x^2| = a_c (x' + x) <=
    min(2 C b_c, C^2)``. In one cell the bound is ``C^2`` (= ``bound ** 2``: what a whole
    company's total moving anywhere in ``[0, C]`` can do) and the tighter ``B (2C - B)`` when
    ``B < C``; over the ``d`` cells the L1 bound is ``min(2 B C, d C^2)``. The L2 bound is
    taken equal to L1 (always valid). Encoding floors ``x^2 * scale``, which can add 1 unit
    per cell: ``l1_sensitivity = ceil(min(2 B C, d C^2) * scale) + d``.

    **Overflow.** The encoded square lies in ``[0, C^2 * scale]``; :class:`SecAggConfig`
    enforces ``n (clip + T) < 2**(modulus_bits - 1)`` on it (``T`` the noise tail bound), as
    for sums. The coordinator uses the finest scale of :data:`SQUARES_SCALES` (``10**6``
    units per squared unit, the square of the sums' kilogram scale, down to 1) that this
    check accepts; the floor costs at most ``1 / scale`` squared units per node, far below
    the noise. With scale 1 the check needs about ``C < sqrt(2**63 / n)`` measure units
    (3e8 t at 100 nodes): a larger ``clip`` is refused.
    """
    if scale not in SQUARES_SCALES:
        raise ValueError(f"a sum_of_squares round uses a scale in {SQUARES_SCALES}, not {scale}")
    cells = secure_query.query.cell_count()
    clip_fp = round(secure_query.clip * FIXED_POINT_SCALE)
    bound_fp = math.ceil(round(secure_query.query.bounds.unit_sum_bound * FIXED_POINT_SCALE, 6))
    square = FIXED_POINT_SCALE**2
    l1_fp2 = min(2 * bound_fp * clip_fp, cells * clip_fp * clip_fp)  # (1/FIXED_POINT_SCALE)^2
    return SquaresEncoding(
        scale=scale, clip=max(1, clip_fp * clip_fp * scale // square),
        l1_sensitivity=-(-l1_fp2 * scale // square) + cells)


def encode_squares(cell_values: list[int], *, secure_query: SecureAggregateQuery,
                   scale: int) -> list[int]:
    """A node's squared cell totals for a ``sum_of_squares`` round: each fixed-point total
    (``FIXED_POINT_SCALE`` units) clipped to ``[0, clip]``, squared and floored to ``scale``
    units per squared measure unit (exact integer arithmetic; :func:`squares_encoding`)."""
    clip_fp = round(secure_query.clip * FIXED_POINT_SCALE)
    square = FIXED_POINT_SCALE**2
    out = []
    for value in cell_values:
        x = min(max(int(value), 0), clip_fp)
        out.append(x * x * scale // square)
    return out


class SecAggJob(BaseModel):
    """Coordinator -> one node (envelope kind ``secagg_job``): the next step of a round.

    Exactly the inputs its ``stage`` (and ``phase``) needs are set (module docstring).
    ``deadline`` is the step's: a node that has not replied by then is a dropout.
    ``round_deadline``: after it the node forgets the round.
    """

    model_config = _FROZEN

    job_id: Annotated[str, Field(pattern=_HEX32)]
    round_id: Annotated[str, Field(pattern=_HEX32)]
    stage: SecAggStage
    phase: SecAggPhase | None = None
    deadline: datetime
    round_deadline: datetime
    requester: Annotated[str, Field(min_length=1, max_length=100)] = "operator"
    secure_query: SecureAggregateQuery | None = None
    config: SecAggConfig | None = None
    identity_keys: dict[str, str] | None = Field(
        default=None, description="participants' Ed25519 public keys as registered at the "
        "coordinator (the node verifies the roster's signatures with them)")
    key_rotations: dict[str, list[KeyRotation]] | None = Field(
        default=None, description="advertise_keys only: each participant's accepted key "
        "rotations, oldest first, so that a peer that pinned an older key can check the chain "
        "to the current one (protocols.follow_key_rotations)")
    roster: KeyRoster | None = None
    forwarded: ForwardedShares | None = None
    unmask_request: UnmaskRequest | None = None
    dominance_request: DominanceRequest | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        needed = _NEEDS.get((self.stage, self.phase))
        if needed is None:
            raise ValueError(f"no step {secagg_step_name(self.stage, self.phase)}")
        present = {name for name in _INPUTS if getattr(self, name) is not None}
        if self.key_rotations is not None and self.stage is not SecAggStage.ADVERTISE_KEYS:
            raise ValueError("only the advertise_keys step carries key rotations")
        if present != set(needed):
            raise ValueError(f"step {secagg_step_name(self.stage, self.phase)} carries "
                             f"{sorted(needed)}, not {sorted(present)}")
        if self.secure_query is not None and self.config is not None and (
                self.config.round_id != self.secure_query.query.query_id
                or self.round_id != self.config.round_id):
            raise ValueError("the round id must be the query id")
        return self


_INPUTS = ("secure_query", "config", "identity_keys", "roster", "forwarded",
           "unmask_request", "dominance_request")
_NEEDS: dict[tuple[SecAggStage, SecAggPhase | None], tuple[str, ...]] = {
    (SecAggStage.ADVERTISE_KEYS, None): ("secure_query", "config", "identity_keys"),
    (SecAggStage.SHARE_KEYS, None): ("roster",),
    (SecAggStage.MASKED_INPUT, SecAggPhase.SUM): ("forwarded",),
    (SecAggStage.UNMASK, SecAggPhase.SUM): ("unmask_request",),
    (SecAggStage.MASKED_INPUT, SecAggPhase.DOMINANCE): ("dominance_request",),
    (SecAggStage.UNMASK, SecAggPhase.DOMINANCE): ("unmask_request",),
}


class MaskedRelease(BaseModel):
    """A node's masked input, with its ledger receipt in phase ``sum`` (the release charged
    to its budget; the receipt's payload digest is over ``masked``)."""

    model_config = _FROZEN

    masked: MaskedInput
    receipt: Receipt | None = None


class SecAggRefusal(BaseModel):
    """Why a node will not take (further) part in a round."""

    model_config = _FROZEN

    reason: str = Field(description="query_refused | budget_exceeded | approval_required | "
                        "unknown_round | protocol | failed")
    message: Annotated[str, Field(max_length=2000)]


class SecAggReply(BaseModel):
    """Node -> coordinator (envelope kind ``secagg_message``): the answer to one job.

    Exactly one of the stage messages, matching the job's step, or a ``refusal``.
    """

    model_config = _FROZEN

    job_id: Annotated[str, Field(pattern=_HEX32)]
    round_id: Annotated[str, Field(pattern=_HEX32)]
    stage: SecAggStage
    phase: SecAggPhase | None = None
    advertisement: AdvertiseKeys | None = None
    shares: ShareKeys | None = None
    masked: MaskedRelease | None = None
    unmask: UnmaskResponse | None = None
    refusal: SecAggRefusal | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        present = [name for name in ("advertisement", "shares", "masked", "unmask", "refusal")
                   if getattr(self, name) is not None]
        if len(present) != 1:
            raise ValueError(f"a reply carries exactly one message, not {present}")
        expected = {SecAggStage.ADVERTISE_KEYS: "advertisement",
                    SecAggStage.SHARE_KEYS: "shares", SecAggStage.MASKED_INPUT: "masked",
                    SecAggStage.UNMASK: "unmask"}[self.stage]
        if present[0] not in ("refusal", expected):
            raise ValueError(f"a reply to {self.stage} carries {expected}, not {present[0]}")
        return self

