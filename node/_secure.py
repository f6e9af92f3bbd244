"""Secure-aggregation jobs at the node: the pull agent's side of a round.

The coordinator hands a round's steps to the node as :class:`protocols.SecAggJob` over the
long poll; :func:`handle_secagg_job` runs the step's stage function of :mod:`node._secagg`
and returns the :class:`protocols.SecAggReply` to post. The node's secrets for a round (its
X25519 keys, self-mask seeds, the shares peers sent it, its clipped values) live in a
:class:`SecureRoundsMemory` held by the agent, in memory only: a node restarted during a
round has lost them, refuses the round's later steps (``unknown_round``) and counts as a
dropout, which the protocol tolerates up to a third of the nodes.

What the node checks before it joins (``advertise_keys``): its policy, as for any aggregate
query (commodities, flows, kind, minimum contributors), with the query's epsilon replaced by
the round's *converted* cost: ``zcdp_epsilon(config.released_rho(), policy delta)`` must not
exceed ``max_epsilon_per_release``; that the planned round matches the query (cells,
scale, L1 and L2 sensitivity at least the query's ``unit_sum_bound``, this node invited,
publication rules at least as strict as the policy's); the differencing guard over the
invited nodes; the peers' identity keys against the keys pinned at this node
(:mod:`node._peer_keys`: a changed key refuses the round, a new peer is pinned); for
statistic ``sum_of_squares``, a scale of
:data:`protocols.SQUARES_SCALES` and at least the sensitivity and clip of
:func:`protocols.squares_encoding` at that scale (this node then squares its own clipped cell
totals, :func:`protocols.encode_squares`, before masking); and that the approval policy
answers it automatically (a round's steps have deadlines of seconds, so a job held for a
person is refused with ``approval_required``).

Before the masked input of phase ``sum`` leaves, the release goes through
:func:`node._releasing.release_once`: the budget is charged ``rho = config.released_rho()``
(kind ``secure_aggregate``), the ledger entry's payload is the masked input, and the
receipt travels with it (:class:`protocols.MaskedRelease`). The dominance indicators that
follow are a publication rule, not a DP release, and are not charged.

A job id answered before gets the same reply again (a redelivery, or a lost post).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlmodel import Session

import node._secagg as client
from node._aggregate import exact_cell_values
from node._db import ReleaseRow, utcnow
from node._differencing import check_differencing
from node._errors import BudgetExceededError, QueryRefusedError
from node._home import NodeContext
from node._ledger import ReleaseOrigin
from node._peer_keys import check_peer_keys
from node._policy import check_query
from node._release import load_records
from node._releasing import ReleaseSpec, release_once
from protocols import (
    DEFAULT_DOMINANCE_PERCENT,
    FIXED_POINT_SCALE,
    SECAGG_MECHANISM,
    SECAGG_SQUARES_MECHANISM,
    SQUARES_SCALES,
    DataTier,
    MaskedRelease,
    PrivacyCost,
    SecAggConfig,
    SecAggError,
    SecAggJob,
    SecAggPhase,
    SecAggRefusal,
    SecAggReply,
    SecAggStage,
    SecureAggregateQuery,
    encode_squares,
    secagg_step_name,
    squares_encoding,
    zcdp_epsilon,
)

__all__ = ["SecureRoundsMemory", "check_secure_query", "handle_secagg_job"]

log = logging.getLogger("node.secure")


@dataclass
class _NodeRound:
    secure_query: SecureAggregateQuery
    config: SecAggConfig
    identity_keys: dict[str, str]
    requester: str
    round_deadline: datetime
    state: client.SecAggNodeState | None = None
    replies: dict[str, SecAggReply] = field(default_factory=dict)  # by job id


@dataclass
class SecureRoundsMemory:
    """The rounds this node takes part in, in memory only (module docstring)."""

    rounds: dict[str, _NodeRound] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def forget_expired(self, now: datetime) -> None:
        """Drop rounds whose deadline passed (their secrets go with them)."""
        with self.lock:
            for round_id in [r for r, v in self.rounds.items() if _aware(v.round_deadline) <= now]:
                del self.rounds[round_id]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_secure_query(context: NodeContext, secure_query: SecureAggregateQuery,
                       config: SecAggConfig) -> float:
    """Raise :class:`QueryRefusedError` unless this node may join the round; return the
    round's cost converted to epsilon at the policy's delta (module docstring)."""
    policy = context.policy
    query = secure_query.query
    node_id = context.settings.node_id
    problems = []
    if config.round_id != query.query_id:
        problems.append("the round id is not the query id")
    if node_id not in config.node_ids:
        problems.append(f"this node ({node_id}) is not among the round's nodes")
    if config.cells != query.cell_count():
        problems.append(f"the round has {config.cells} cells, the query {query.cell_count()}")
    if secure_query.statistic == "sum_of_squares":
        problems.extend(_squares_problems(secure_query, config))
    else:
        if config.scale != FIXED_POINT_SCALE:
            problems.append(f"fixed-point scale {config.scale}, expected {FIXED_POINT_SCALE}")
        bound = round(query.bounds.unit_sum_bound * FIXED_POINT_SCALE)
        if min(config.l1_sensitivity, config.l2_sensitivity) < bound:
            # This node can vouch for no L2 bound tighter than L1 = unit_sum_bound.
            problems.append("the round's sensitivity is below the query's unit_sum_bound: its "
                            "noise would be too small")
    if config.min_contributors < max(query.min_contributors, policy.release.min_contributors):
        problems.append(f"the round publishes cells of {config.min_contributors} "
                        "contributors, fewer than the query or this node's policy allow")
    if config.dominance_percent > DEFAULT_DOMINANCE_PERCENT:
        problems.append(f"dominance threshold {config.dominance_percent}% is above "
                        f"{DEFAULT_DOMINANCE_PERCENT}%")
    if problems:
        raise QueryRefusedError("the planned secure-aggregation round does not match the "
                                "query: " + "; ".join(problems), rule="secure_round")
    epsilon = zcdp_epsilon(config.released_rho(), policy.budget.delta)
    # The policy's rules, with the query's epsilon replaced by the round's converted cost.
    capped = epsilon if math.isfinite(epsilon) else 1e9
    check_query(policy, query.model_copy(update={"epsilon": capped}))
    return epsilon


def _squares_problems(secure_query: SecureAggregateQuery, config: SecAggConfig) -> list[str]:
    """What is wrong with a ``sum_of_squares`` round's encoding (empty: nothing)."""
    if config.scale not in SQUARES_SCALES:
        return [f"fixed-point scale {config.scale} of a sum of squares, expected one of "
                f"{SQUARES_SCALES}"]
    needed = squares_encoding(secure_query, scale=config.scale)
    problems = []
    if min(config.l1_sensitivity, config.l2_sensitivity) < needed.l1_sensitivity:
        problems.append(f"the round's sensitivity is below {needed.l1_sensitivity}, the bound "
                        "of one unit's change of a squared clipped cell total: its noise "
                        "would be too small")
    if config.clip < needed.clip:
        problems.append(f"the round clips squares at {config.clip}, below clip^2 = "
                        f"{needed.clip}: the squares would be clipped again")
    return problems


def handle_secagg_job(*, context: NodeContext, memory: SecureRoundsMemory, job: SecAggJob,
                      now: datetime | None = None) -> SecAggReply:
    """Run one step of a round and return the reply to post (a refusal says why not)."""
    now = now or utcnow()
    memory.forget_expired(now)
    with memory.lock:
        known = memory.rounds.get(job.round_id)
        if known is not None and job.job_id in known.replies:
            return known.replies[job.job_id]
    name = secagg_step_name(job.stage, job.phase)
    try:
        reply = _run_step(context, memory, job, now)
    except BudgetExceededError as exc:
        reply = _refusal(job, "budget_exceeded", str(exc))
    except QueryRefusedError as exc:
        reply = _refusal(job, "query_refused", str(exc))
    except _Refused as exc:
        reply = _refusal(job, exc.reason, str(exc))
    except SecAggError as exc:
        reply = _refusal(job, "protocol", f"{type(exc).__name__}: {exc}")
    if reply.refusal is not None:
        log.warning("secure round %s, step %s: refused (%s): %s", job.round_id, name,
                    reply.refusal.reason, reply.refusal.message)
        with memory.lock:
            memory.rounds.pop(job.round_id, None)  # this node takes no further part
    else:
        with memory.lock:
            current = memory.rounds.get(job.round_id)
            if current is not None:
                current.replies[job.job_id] = reply
        log.info("secure round %s, step %s: sent", job.round_id, name)
    return reply


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _refusal(job: SecAggJob, reason: str, message: str) -> SecAggReply:
    return SecAggReply(job_id=job.job_id, round_id=job.round_id, stage=job.stage,
                       phase=job.phase, refusal=SecAggRefusal(reason=reason,
                                                              message=message[:2000]))


def _reply(job: SecAggJob, **message: BaseModel) -> SecAggReply:
    return SecAggReply.model_validate({"job_id": job.job_id, "round_id": job.round_id,
                                       "stage": job.stage, "phase": job.phase, **message})


def _run_step(context: NodeContext, memory: SecureRoundsMemory, job: SecAggJob,
              now: datetime) -> SecAggReply:
    if _aware(job.deadline) <= now:
        raise _Refused("expired", f"the step's deadline {job.deadline.isoformat()} passed")
    if job.stage is SecAggStage.ADVERTISE_KEYS:
        return _advertise(context, memory, job)
    with memory.lock:
        known = memory.rounds.get(job.round_id)
    if known is None or known.state is None:
        raise _Refused("unknown_round", f"this node does not know round {job.round_id}: it "
                       "was restarted since the round began (a round's keys are kept in "
                       "memory only) or refused an earlier step; it takes no further part")
    state = known.state
    if job.stage is SecAggStage.SHARE_KEYS:
        assert job.roster is not None
        return _reply(job, shares=client.share_keys(state, roster=job.roster,
                                                    identity_keys=known.identity_keys))
    if job.stage is SecAggStage.UNMASK:
        assert job.unmask_request is not None
        if job.unmask_request.phase is not job.phase:
            raise _Refused("protocol", "the unmask request is for another phase")
        return _reply(job, unmask=client.unmask(state, request=job.unmask_request))
    if job.phase is SecAggPhase.DOMINANCE:
        assert job.dominance_request is not None
        masked = client.dominance_input(state, request=job.dominance_request)
        return _reply(job, masked=MaskedRelease(masked=masked))
    return _reply(job, masked=_masked_sum(context, known, job))


def _advertise(context: NodeContext, memory: SecureRoundsMemory, job: SecAggJob) -> SecAggReply:
    assert job.secure_query is not None and job.config is not None
    assert job.identity_keys is not None
    with memory.lock:
        if job.round_id in memory.rounds:
            raise _Refused("protocol", f"round {job.round_id} was already started here")
    secure_query, config = job.secure_query, job.config
    if _released(context, secure_query.query.query_id):
        raise QueryRefusedError(f"query id {secure_query.query.query_id} was already "
                                "released by this node; a secure round needs a fresh query id",
                                rule="query_id")
    epsilon = check_secure_query(context, secure_query, config)
    query = secure_query.query.model_copy(update={"epsilon": epsilon})
    mode = context.policy.approval.mode_for(query, DataTier.STANDARDISED)
    if mode == "manual":
        raise _Refused("approval_required", "this node's approval policy holds such queries "
                       "for a person, but a secure-aggregation round cannot wait (its steps "
                       "have deadlines of seconds); change the approval rules to take part")
    with context.engine.connect() as connection:
        check_differencing(connection=connection, query=secure_query.query,
                           coverage=context.policy.coverage, participants=config.node_ids)
        connection.rollback()
    pinned = check_peer_keys(home=context.home, identity_keys=job.identity_keys,
                             own_node_id=context.settings.node_id,
                             own_public_key=context.public_key, rotations=job.key_rotations)
    if pinned:
        log.info("secure round %s: pinned the identity keys of %s (new peers, or rotated "
                 "keys signed by the pinned ones)",
                 job.round_id, ", ".join(pinned))
    state, advert = client.advertise_keys(config=config, node_id=context.settings.node_id,
                                          identity_key=context.private_key)
    with memory.lock:
        memory.rounds[job.round_id] = _NodeRound(
            secure_query=secure_query, config=config, identity_keys=dict(job.identity_keys),
            requester=job.requester, round_deadline=job.round_deadline, state=state)
    return _reply(job, advertisement=advert)


def _released(context: NodeContext, query_id: str) -> bool:
    with Session(context.engine) as session:
        return session.get(ReleaseRow, query_id) is not None


def _masked_sum(context: NodeContext, known: _NodeRound, job: SecAggJob) -> MaskedRelease:
    """Charge the budget and record the release, then mask (see the module docstring)."""
    assert job.forwarded is not None and known.state is not None
    state, forwarded = known.state, job.forwarded
    secure_query, config = known.secure_query, known.config
    query = secure_query.query
    policy = context.policy
    spec = ReleaseSpec(
        query_id=query.query_id,
        query={"secure_query": secure_query.model_dump(mode="json"),
               "secagg_config": config.model_dump(mode="json")},
        purpose=query.purpose, kind="secure_aggregate",
        mechanism=(SECAGG_SQUARES_MECHANISM if secure_query.statistic == "sum_of_squares"
                   else SECAGG_MECHANISM),
        cost=PrivacyCost(rho=config.released_rho()),
        accounting_periods=query.accounting_periods())
    origin = ReleaseOrigin(requester=known.requester, tier=DataTier.STANDARDISED,
                           job_id=job.job_id, participants=config.node_ids)
    with context.engine.connect() as connection:
        guarded = check_differencing(connection=connection, query=query,
                                     coverage=policy.coverage, participants=config.node_ids)
        connection.rollback()

    def compute() -> MaskedRelease:
        with context.engine.connect() as connection:
            records = load_records(connection=connection, query=query)
            connection.rollback()
        sums, _ = exact_cell_values(records, query, policy.coverage)
        assert sums is not None  # a sum query
        if secure_query.statistic == "sum_of_squares":
            sums = encode_squares(sums, secure_query=secure_query, scale=config.scale)
        return MaskedRelease(masked=client.masked_input(state, forwarded=forwarded,
                                                        cell_values=sums))

    return release_once(context=context, spec=spec, origin=origin, compute=compute,
                        guarded=guarded, payload=lambda r: r.masked.model_dump(mode="json"))
