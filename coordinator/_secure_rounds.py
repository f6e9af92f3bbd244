"""Secure-aggregation rounds over the pull transport: the coordinator drives the stages.

An operator submits a :class:`protocols.SecureAggregateQuery`; :func:`start_secure_query`
plans one round over the active pull-mode nodes (:func:`protocols.plan_secagg_round`, round
id = query id), records the query in the history (status ``running``) and queues one
``advertise_keys`` job per node. Nodes fetch jobs with the ordinary long poll
(:func:`next_secagg_job`, envelope kind ``secagg_job``) and post one reply per job
(:func:`receive_secagg_reply`, envelope kind ``secagg_message``). A step closes when every
node it waits for has replied, or at its deadline (:func:`tick_secure_rounds`); nodes that
did not reply by then are dropouts and get no further jobs. Closing a step calls the stage
functions of :mod:`coordinator._secagg` and queues the next step's jobs:

``advertise_keys -> share_keys -> masked_input/sum -> unmask/sum -> masked_input/dominance
-> unmask/dominance -> result``

The result (published cells, suppressed ones with their reason) is written to the query
history (``QueryRow``, as a :class:`~coordinator.PooledResult`) and the nodes' ledger receipts
for their masked inputs to the receipts table.

**Statistic.** A query of statistic ``sum_of_squares`` (company concentration,
docs/indicators.md) is planned at the finest scale of :data:`protocols.SQUARES_SCALES` whose
encoding (:func:`protocols.squares_encoding`) passes the overflow check; its cells and noise
std are in squared measure units, and its history record says so in the query's purpose
(prefix :data:`SQUARES_PURPOSE`), since the stored query is an ordinary ``sum``.

**State in memory.** A round's state (public keys, relayed ciphertexts, masked vectors,
unmask shares) lives only in this process (:class:`SecureRounds`), never in the database: a
coordinator restart loses it. At start-up :func:`fail_lost_rounds` marks every secure query
left ``running`` as ``failed``, saying so; nothing was published, and the nodes that had
sent masked inputs were charged (their releases stay in their ledgers). Secure aggregation
therefore needs a single coordinator process.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import coordinator._secagg as server
from coordinator._db import JobRow, NodeRow, QueryRow, utcnow
from coordinator._differencing import check_submission
from coordinator._enrolment import key_rotations_of
from coordinator._errors import CoordinatorError, UnknownQueryError
from coordinator._models import CellStatus, NodeOutcome, NodeStatus, PooledCell, PooledResult
from coordinator._notify import jobs_queued
from coordinator._receipts import store_receipt
from coordinator._verify import check_receipt
from protocols import (
    FIXED_POINT_SCALE,
    SQUARES_SCALES,
    AggregateQuery,
    KeyRotation,
    Receipt,
    SecAggConfig,
    SecAggError,
    SecAggJob,
    SecAggPhase,
    SecAggReply,
    SecAggStage,
    SecAggStatistic,
    SecureAggregateQuery,
    SecurePoolResult,
    canonical_json,
    plan_secagg_round,
    secagg_step_name,
    squares_encoding,
)
from protocols import (
    CellStatus as SecureCellStatus,
)

__all__ = [
    "SECAGG_STEPS",
    "SQUARES_PURPOSE",
    "SecureQueryRequest",
    "SecureQueryStatus",
    "SecureRoundError",
    "SecureRounds",
    "fail_lost_rounds",
    "next_secagg_job",
    "receive_secagg_reply",
    "secure_query_status",
    "start_secure_query",
    "tick_secure_rounds",
    "wait_for_secure_query",
]

Step = tuple[SecAggStage, SecAggPhase | None]

#: The steps of a round, in order.
SECAGG_STEPS: tuple[Step, ...] = (
    (SecAggStage.ADVERTISE_KEYS, None),
    (SecAggStage.SHARE_KEYS, None),
    (SecAggStage.MASKED_INPUT, SecAggPhase.SUM),
    (SecAggStage.UNMASK, SecAggPhase.SUM),
    (SecAggStage.MASKED_INPUT, SecAggPhase.DOMINANCE),
    (SecAggStage.UNMASK, SecAggPhase.DOMINANCE),
)
#: Published reason of a suppressed cell, by the protocol's cell status.
_REASONS = {
    SecureCellStatus.TOO_FEW_CONTRIBUTORS: "min_contributors",
    SecureCellStatus.DOMINATED: "dominance",
    SecureCellStatus.DOMINANCE_UNCHECKED: "dominance_unchecked",
}
#: Prefix of the purpose stored in the history for a ``sum_of_squares`` round.
SQUARES_PURPOSE = "[sum of squares of each node's cell total, squared units] "
_LOST = ("the coordinator restarted during this secure-aggregation round; a round's state "
         "is held in the coordinator's memory only, so the round failed and nothing was "
         "published. Submit the query again with a new query id")


class SecureRoundError(CoordinatorError):
    """A request or a node's message does not fit a secure round (unknown round or job, a
    closed step, too few nodes, a query id already used)."""


class SecureQueryRequest(BaseModel):
    """``POST /v1/secure-queries``: the query and the time each step may take."""

    model_config = ConfigDict(extra="forbid")

    query: SecureAggregateQuery
    stage_seconds: Annotated[float | None, Field(ge=0.5, le=3600)] = Field(
        default=None, description="deadline of each of the round's six steps (default 30 s); "
        "nodes that have not replied by then are dropouts")
    wait_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        default=0.0, description="wait up to this long for the round to finish")


class SecureNodeView(BaseModel):
    """One node's part in a secure round (never its values)."""

    node_id: str
    status: NodeStatus
    step: str | None = Field(default=None, description="the step it dropped out or refused at")
    message: str | None = None


class SecureQueryStatus(BaseModel):
    """A secure query's state; ``cells`` once completed."""

    query_id: str
    status: str = Field(description="running | completed | failed")
    step: str | None = Field(default=None, description="the step under way")
    query: AggregateQuery
    statistic: SecAggStatistic = Field(default="sum", description="sum: cells are pooled "
                                       "sums; sum_of_squares: pooled squares of each node's "
                                       "clipped cell total (squared measure units)")
    clip: float | None = Field(default=None, description="the clip of a node's cell total, "
                               "in measure units (unknown once read back from the history)")
    nodes: list[SecureNodeView]
    cells: list[PooledCell] = Field(default_factory=list)
    rho: float | None = Field(default=None, description="zCDP rho of the pooled sums, as "
                              "planned (worst case the round accepts)")
    released_rho: float | None = Field(default=None, description="rho given the inputs "
                                       "actually summed")
    noise_std: float | None = Field(default=None, description="std of the pooled noise, in "
                                    "measure units (squared for sum_of_squares)")
    sum_survivors: list[str] = Field(default_factory=list)
    dominance_survivors: list[str] = Field(default_factory=list)
    created_at: datetime
    deadline: datetime
    finished_at: datetime | None = None
    error: str | None = None


@dataclass
class _Participant:
    node_id: str
    status: NodeStatus = NodeStatus.PENDING
    step: str | None = None
    message: str | None = None
    pending: SecAggJob | None = None
    delivered_at: datetime | None = None
    answered: set[str] = field(default_factory=set)  # job ids replied to

    @property
    def active(self) -> bool:
        return self.status in (NodeStatus.PENDING, NodeStatus.ANSWERED)


@dataclass
class SecureRound:
    """One round in memory (module docstring)."""

    secure_query: SecureAggregateQuery
    config: SecAggConfig
    state: server.SecAggServerState
    requester: str
    created_at: datetime
    deadline: datetime
    stage_seconds: float
    participants: dict[str, _Participant]
    step: Step | None = None
    step_deadline: datetime | None = None
    status: str = "running"
    error: str | None = None
    result: SecurePoolResult | None = None
    finished_at: datetime | None = None
    receipts: dict[str, Receipt] = field(default_factory=dict)
    bytes_received: int = 0

    @property
    def query_id(self) -> str:
        return self.config.round_id


@dataclass
class SecureRounds:
    """Every round this coordinator process runs (in memory; see the module docstring)."""

    engine: Engine
    stage_seconds: float = 30.0
    redeliver_seconds: float = 10.0
    keep_finished_seconds: float = 3600.0
    rounds: dict[str, SecureRound] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


# --- starting a round ---------------------------------------------------------------------


def start_secure_query(rounds: SecureRounds, *, secure_query: SecureAggregateQuery,
                       stage_seconds: float | None = None, requester: str = "operator",
                       now: datetime | None = None) -> SecureQueryStatus:
    """Plan a round over the active pull-mode nodes, record the query and queue the first
    step's jobs. Raises :class:`SecureRoundError` (fewer than 3 nodes, query id taken, bad
    parameters) or :class:`~coordinator.DifferencingRefusedError`."""
    now = now or utcnow()
    query = secure_query.query
    seconds = stage_seconds or rounds.stage_seconds
    with rounds.lock, Session(rounds.engine) as session:
        if query.query_id in rounds.rounds or session.get(QueryRow, query.query_id) is not None:
            raise SecureRoundError(f"query id {query.query_id} is already used; every secure "
                                   "query needs a fresh query id")
        nodes = session.exec(select(NodeRow).where(col(NodeRow.active),
                                                   NodeRow.transport == "pull")).all()
        if len(nodes) < 3:
            raise SecureRoundError(f"secure aggregation needs at least 3 active pull-mode "
                                   f"nodes; {len(nodes)} are enrolled")
        participants = sorted(n.node_id for n in nodes)
        check_submission(session=session, query=query, participants=participants)
        config = _plan(secure_query, participants)
        identity_keys = {n.node_id: n.public_key for n in nodes}
        deadline = now + timedelta(seconds=seconds * len(SECAGG_STEPS))
        stored = _history_query(secure_query)
        session.add(QueryRow(
            query_id=query.query_id, purpose=stored.purpose, requester=requester,
            tier="standardised", status="running", quorum=config.required_survivors,
            deadline=deadline + timedelta(seconds=seconds),
            query_json=canonical_json(stored.model_dump(mode="json")).decode("utf-8"),
            created_at=now, participants=",".join(participants)))
        session.commit()
        secure = SecureRound(
            secure_query=secure_query, config=config,
            state=server.start_round(config=config, identity_keys=identity_keys),
            requester=requester, created_at=now, deadline=deadline, stage_seconds=seconds,
            participants={n: _Participant(n) for n in participants})
        rounds.rounds[query.query_id] = secure
        _open_step(rounds, secure, SECAGG_STEPS[0], now, identity_keys=identity_keys,
                   key_rotations=key_rotations_of(engine=rounds.engine, node_ids=participants))
        return _status(secure)


def _plan(secure_query: SecureAggregateQuery, participants: list[str]) -> SecAggConfig:
    """The round's configuration: sums at ``FIXED_POINT_SCALE`` with L1 ``unit_sum_bound``;
    squares at the finest :data:`~protocols.SQUARES_SCALES` scale that does not overflow."""
    query = secure_query.query

    def plan(*, clip: int, l1_sensitivity: int, scale: int) -> SecAggConfig:
        return plan_secagg_round(
            node_ids=participants, cells=query.cell_count(), clip=clip,
            l1_sensitivity=l1_sensitivity, scale=scale, rho=secure_query.target_rho(),
            tolerate_dropouts=secure_query.tolerate_dropouts, round_id=query.query_id,
            min_contributors=query.min_contributors)

    if secure_query.statistic == "sum":
        try:
            return plan(clip=max(1, round(secure_query.clip * FIXED_POINT_SCALE)),
                        l1_sensitivity=max(1, math.ceil(query.bounds.unit_sum_bound
                                                        * FIXED_POINT_SCALE)),
                        scale=FIXED_POINT_SCALE)
        except (SecAggError, ValueError) as exc:
            raise SecureRoundError(f"cannot plan the round: {exc}") from exc
    error: Exception | None = None
    for scale in SQUARES_SCALES:
        encoding = squares_encoding(secure_query, scale=scale)
        try:
            return plan(clip=encoding.clip, l1_sensitivity=encoding.l1_sensitivity, scale=scale)
        except (SecAggError, ValueError) as exc:
            error = exc
    raise SecureRoundError(f"cannot plan a sum_of_squares round even at {SQUARES_SCALES[-1]} "
                           f"unit per squared measure unit (lower clip): {error}")


def _history_query(secure_query: SecureAggregateQuery) -> AggregateQuery:
    """The query as the history stores it: a ``sum_of_squares`` round says so in its purpose."""
    query = secure_query.query
    if secure_query.statistic == "sum":
        return query
    return query.model_copy(update={"purpose": (SQUARES_PURPOSE + query.purpose)[:500]})


# --- steps ----------------------------------------------------------------------------------


def _job(secure: SecureRound, step: Step, now: datetime, **inputs: object) -> SecAggJob:
    stage, phase = step
    assert secure.step_deadline is not None
    return SecAggJob.model_validate({
        "job_id": uuid.uuid4().hex, "round_id": secure.query_id, "stage": stage,
        "phase": phase, "deadline": secure.step_deadline, "round_deadline": secure.deadline,
        "requester": secure.requester, **inputs})


def _open_step(rounds: SecureRounds, secure: SecureRound, step: Step, now: datetime, *,
               identity_keys: dict[str, str] | None = None,
               key_rotations: dict[str, list[KeyRotation]] | None = None) -> None:
    """Queue ``step``'s jobs (its inputs come from the stage functions)."""
    state = secure.state
    secure.step = step
    secure.step_deadline = now + timedelta(seconds=secure.stage_seconds)
    jobs: dict[str, SecAggJob] = {}
    active = [p.node_id for p in secure.participants.values() if p.active]
    if step == SECAGG_STEPS[0]:
        for node in active:
            jobs[node] = _job(secure, step, now, secure_query=secure.secure_query,
                              config=secure.config, identity_keys=identity_keys,
                              key_rotations=key_rotations or None)
    elif step[0] is SecAggStage.SHARE_KEYS:
        server.broadcast_roster(state)  # fails the step if too few advertised
        for node in active:
            if node in state.advertisements:  # sparse graph: its neighbours' keys only
                jobs[node] = _job(secure, step, now, roster=server.roster_for(state, node))
    elif step == (SecAggStage.MASKED_INPUT, SecAggPhase.SUM):
        forwarded = server.forward_shares(state)
        for node in active:
            if node in forwarded:
                jobs[node] = _job(secure, step, now, forwarded=forwarded[node])
    elif step[0] is SecAggStage.UNMASK:
        assert step[1] is not None
        request = server.request_unmask(state, phase=step[1])
        for node in active:
            if node in request.survivors:
                jobs[node] = _job(secure, step, now, unmask_request=request)
    else:  # masked_input/dominance: the sum phase is unmasked first
        server.unmask_phase(state, phase=SecAggPhase.SUM)
        dominance = server.request_dominance(state)
        for node in active:
            if node in dominance.participants:
                jobs[node] = _job(secure, step, now, dominance_request=dominance)
    for node, job in jobs.items():
        participant = secure.participants[node]
        participant.pending, participant.delivered_at = job, None
    jobs_queued()


def _close_step(rounds: SecureRounds, secure: SecureRound, now: datetime) -> None:
    """Count the step's non-responders as dropouts and open the next step (or finish)."""
    assert secure.step is not None
    name = secagg_step_name(*secure.step)
    for participant in secure.participants.values():
        if participant.pending is not None:
            participant.pending = None
            participant.status = NodeStatus.EXPIRED
            participant.step = name
            participant.message = f"dropped out: no reply to step {name} by its deadline"
    index = SECAGG_STEPS.index(secure.step)
    try:
        if index + 1 < len(SECAGG_STEPS):
            _open_step(rounds, secure, SECAGG_STEPS[index + 1], now)
        else:
            server.unmask_phase(secure.state, phase=SecAggPhase.DOMINANCE)
            _finish(rounds, secure, server.finish_round(secure.state), now)
    except SecAggError as exc:
        _fail(rounds, secure, f"the round failed after step {name}: {exc}", now)


def _advance(rounds: SecureRounds, secure: SecureRound, now: datetime) -> None:
    """Close steps while every awaited node has replied (or the deadline passed)."""
    while secure.status == "running":
        waiting = any(p.pending is not None for p in secure.participants.values())
        due = secure.step_deadline is not None and now >= secure.step_deadline
        if waiting and not due:
            return
        _close_step(rounds, secure, now)


# --- nodes ----------------------------------------------------------------------------------


def next_secagg_job(rounds: SecureRounds, *, node_id: str,
                    now: datetime | None = None) -> SecAggJob | None:
    """The node's current step job, if it has one it was not handed in the last
    ``redeliver_seconds`` (a lost delivery is repeated; the node answers a job id once)."""
    now = now or utcnow()
    with rounds.lock:
        for secure in rounds.rounds.values():
            participant = secure.participants.get(node_id)
            if secure.status != "running" or participant is None or participant.pending is None:
                continue
            if participant.delivered_at is not None and (
                    now - participant.delivered_at).total_seconds() < rounds.redeliver_seconds:
                continue
            participant.delivered_at = now
            return participant.pending
    return None


def receive_secagg_reply(rounds: SecureRounds, *, node_id: str, public_key: str,
                         reply: SecAggReply, size: int = 0,
                         now: datetime | None = None) -> bool:
    """Accept a node's reply to its current job; ``False`` if it was already received.

    A refusal makes the node a dropout. A message that fails the protocol's checks (sent
    for another node, forged, replayed, a missing or wrong ledger receipt) makes it a
    dropout too and raises :class:`SecureRoundError` with the reason.
    """
    now = now or utcnow()
    with rounds.lock:
        secure = rounds.rounds.get(reply.round_id)
        if secure is None:
            raise SecureRoundError(f"no secure-aggregation round {reply.round_id} is known to "
                                   "this coordinator (finished long ago, or lost in a restart)")
        participant = secure.participants.get(node_id)
        if participant is None:
            raise SecureRoundError(f"{node_id} is not a participant of round {reply.round_id}")
        if reply.job_id in participant.answered:
            return False
        job = participant.pending
        if secure.status != "running" or job is None or job.job_id != reply.job_id:
            raise SecureRoundError(f"job {reply.job_id} is not {node_id}'s current step of round "
                                   f"{reply.round_id} (the step closed, or the round ended)")
        if (reply.stage, reply.phase) != (job.stage, job.phase):
            raise SecureRoundError(f"a reply of step {secagg_step_name(reply.stage, reply.phase)}"
                                   f" to a job of step {secagg_step_name(job.stage, job.phase)}")
        participant.pending = None
        participant.answered.add(job.job_id)
        secure.bytes_received += size
        name = secagg_step_name(job.stage, job.phase)
        error = None
        if reply.refusal is not None:
            participant.status = (NodeStatus.BUDGET_EXCEEDED
                                  if reply.refusal.reason == "budget_exceeded"
                                  else NodeStatus.REFUSED)
            participant.step, participant.message = name, reply.refusal.message
        else:
            try:
                _accept(rounds, secure, node_id, public_key, reply, job)
            except (SecAggError, ValueError) as exc:
                participant.status, participant.step = NodeStatus.INVALID, name
                participant.message = f"message rejected: {exc}"
                error = SecureRoundError(f"{name} message rejected: {exc}")
            else:
                participant.status = NodeStatus.ANSWERED
        _advance(rounds, secure, now)
        if error is not None:
            raise error
        return True


def _accept(rounds: SecureRounds, secure: SecureRound, node_id: str, public_key: str,
            reply: SecAggReply, job: SecAggJob) -> None:
    """Hand one stage message to the stage function (after checking it is the node's own)."""
    state = secure.state
    if reply.advertisement is not None:
        _own(reply.advertisement.sender, node_id)
        server.receive_advertisement(state, reply.advertisement)
    elif reply.shares is not None:
        _own(reply.shares.sender, node_id)
        server.receive_shares(state, reply.shares)
    elif reply.unmask is not None:
        _own(reply.unmask.sender, node_id)
        if reply.unmask.phase is not job.phase:
            raise ValueError(f"an unmask response of phase {reply.unmask.phase}")
        server.receive_unmask_response(state, reply.unmask)
    else:
        assert reply.masked is not None
        masked = reply.masked.masked
        _own(masked.sender, node_id)
        if masked.phase is not job.phase:
            raise ValueError(f"a masked input of phase {masked.phase}")
        receipt = None
        if masked.phase is SecAggPhase.SUM:
            receipt = check_receipt(node_id=node_id, public_key=public_key,
                                    query_id=secure.query_id, epsilon=0.0,
                                    payload=masked.model_dump(mode="json"),
                                    receipt=reply.masked.receipt)
            planned = secure.config.released_rho()
            if receipt.cost.rho < planned * (1 - 1e-9):
                raise ValueError(f"the ledger receipt records rho {receipt.cost.rho:g}, less "
                                 f"than the round's {planned:g}")
        elif reply.masked.receipt is not None:
            raise ValueError("the dominance input is not a release; it carries no receipt")
        server.receive_masked_input(state, masked)
        if receipt is not None:
            secure.receipts[node_id] = receipt
            with Session(rounds.engine) as session:
                store_receipt(session=session, job_id=job.job_id, receipt=receipt)
                session.commit()


def _own(sender: str, node_id: str) -> None:
    if sender != node_id:
        raise ValueError(f"the message names sender {sender!r}, but came from {node_id!r}")


# --- deadlines, the result ------------------------------------------------------------------


def tick_secure_rounds(rounds: SecureRounds, now: datetime | None = None) -> None:
    """Close steps whose deadline passed; forget rounds finished long ago."""
    now = now or utcnow()
    with rounds.lock:
        for query_id, secure in list(rounds.rounds.items()):
            if secure.status == "running":
                if now >= secure.deadline + timedelta(seconds=secure.stage_seconds):
                    _fail(rounds, secure, "the round did not finish by its deadline", now)
                else:
                    _advance(rounds, secure, now)
            elif secure.finished_at is not None and (
                    now - secure.finished_at).total_seconds() > rounds.keep_finished_seconds:
                del rounds.rounds[query_id]


def _cells(secure: SecureRound, result: SecurePoolResult) -> list[PooledCell]:
    scale = result.scale
    std = result.noise_std / scale
    cells = []
    for key, total, status in zip(secure.secure_query.query.public_keys(), result.noisy_totals,
                                  result.status, strict=True):
        if status is SecureCellStatus.PUBLISHED and total is not None:
            cells.append(PooledCell(key=list(key), status=CellStatus.PUBLISHED,
                                    value=total / scale, std=std, ci95=1.959964 * std))
        else:
            cells.append(PooledCell(key=list(key), status=CellStatus.SUPPRESSED,
                                    reason=_REASONS.get(status, str(status))))
    return cells


def _outcomes(secure: SecureRound) -> list[NodeOutcome]:
    summed = set(secure.result.sum_survivors) if secure.result is not None else set()
    outcomes = []
    for node, p in sorted(secure.participants.items()):
        if node in summed:
            message = "masked input summed" + ("" if p.active else f"; then {p.message}")
            outcomes.append(NodeOutcome(node_id=node, status=NodeStatus.ANSWERED,
                                        message=message))
        else:
            status = NodeStatus.PENDING if p.active and secure.status == "running" else (
                NodeStatus.EXPIRED if p.active else p.status)
            outcomes.append(NodeOutcome(node_id=node, status=status, message=p.message))
    return outcomes


def _store(rounds: SecureRounds, secure: SecureRound, cells: list[PooledCell],
           now: datetime) -> None:
    result = PooledResult(
        query=_history_query(secure.secure_query), status=secure.status, cells=cells,
        nodes=_outcomes(secure), created_at=secure.created_at, finished_at=now,
        quorum=secure.config.required_survivors, deadline=secure.deadline, error=secure.error)
    with Session(rounds.engine) as session:
        row = session.get(QueryRow, secure.query_id)
        if row is not None:
            row.status, row.error, row.finished_at = secure.status, secure.error, now
            row.result_json = result.model_dump_json()
            session.add(row)
            session.commit()


def _finish(rounds: SecureRounds, secure: SecureRound, result: SecurePoolResult,
            now: datetime) -> None:
    secure.result, secure.status, secure.finished_at, secure.step = result, "completed", now, None
    _store(rounds, secure, _cells(secure, result), now)


def _fail(rounds: SecureRounds, secure: SecureRound, error: str, now: datetime) -> None:
    secure.status, secure.error, secure.finished_at, secure.step = "failed", error, now, None
    for participant in secure.participants.values():
        participant.pending = None
    _store(rounds, secure, [], now)


def fail_lost_rounds(*, engine: Engine, rounds: SecureRounds,
                     now: datetime | None = None) -> list[str]:
    """Mark as failed every unfinished secure query this process does not hold (a restart
    lost it): unfinished queries with no job rows. Returns their ids."""
    now = now or utcnow()
    failed = []
    with rounds.lock, Session(engine) as session:
        rows = session.exec(select(QueryRow).where(
            col(QueryRow.status).in_(["queued", "running"]))).all()
        for row in rows:
            if row.query_id in rounds.rounds:
                continue
            has_jobs = session.exec(select(JobRow.job_id).where(
                JobRow.query_id == row.query_id).limit(1)).first()
            if has_jobs is not None:
                continue
            row.status, row.error, row.finished_at = "failed", _LOST, now
            result = PooledResult(query=AggregateQuery.model_validate_json(row.query_json),
                                  status="failed", cells=[], nodes=[],
                                  created_at=_aware(row.created_at), finished_at=now,
                                  quorum=row.quorum, deadline=_aware(row.deadline), error=_LOST)
            row.result_json = result.model_dump_json()
            session.add(row)
            failed.append(row.query_id)
        session.commit()
    return failed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- reading ----------------------------------------------------------------------------------


def _status(secure: SecureRound) -> SecureQueryStatus:
    result = secure.result
    scale = secure.config.scale
    views = []
    summed = set(result.sum_survivors) if result is not None else set()
    for node, p in sorted(secure.participants.items()):
        status = NodeStatus.ANSWERED if node in summed else p.status
        views.append(SecureNodeView(node_id=node, status=status, step=p.step,
                                    message=p.message))
    return SecureQueryStatus(
        query_id=secure.query_id, status=secure.status,
        step=None if secure.step is None else secagg_step_name(*secure.step),
        query=secure.secure_query.query, statistic=secure.secure_query.statistic,
        clip=secure.secure_query.clip, nodes=views,
        cells=_cells(secure, result) if result is not None else [],
        rho=secure.config.released_rho(),
        released_rho=None if result is None else result.released_rho,
        noise_std=None if result is None else result.noise_std / scale,
        sum_survivors=list(result.sum_survivors) if result is not None else [],
        dominance_survivors=list(result.dominance_survivors) if result is not None else [],
        created_at=secure.created_at, deadline=secure.deadline,
        finished_at=secure.finished_at, error=secure.error)


def secure_query_status(rounds: SecureRounds, *, query_id: str) -> SecureQueryStatus:
    """A secure query's state: from memory, else (finished or lost) from the history."""
    with rounds.lock:
        secure = rounds.rounds.get(query_id)
        if secure is not None:
            return _status(secure)
    with Session(rounds.engine) as session:
        row = session.get(QueryRow, query_id)
        has_jobs = session.exec(select(JobRow.job_id).where(
            JobRow.query_id == query_id).limit(1)).first()
    if row is None or has_jobs is not None:
        raise UnknownQueryError(f"no secure query with id {query_id}")
    error: str | None = row.error
    status = row.status
    if status in ("queued", "running"):
        error, status = _LOST, "failed"
    cells: Sequence[PooledCell] = []
    nodes: list[SecureNodeView] = []
    if row.result_json is not None:
        pooled = PooledResult.model_validate_json(row.result_json)
        cells = pooled.cells
        nodes = [SecureNodeView(node_id=o.node_id, status=o.status, message=o.message)
                 for o in pooled.nodes]
    stored = AggregateQuery.model_validate_json(row.query_json)
    squares = stored.purpose.startswith(SQUARES_PURPOSE)
    return SecureQueryStatus(
        query_id=query_id, status=status, query=stored,
        statistic="sum_of_squares" if squares else "sum", nodes=nodes, cells=list(cells),
        created_at=_aware(row.created_at),
        deadline=_aware(row.deadline), finished_at=row.finished_at and _aware(row.finished_at),
        error=error)


async def wait_for_secure_query(rounds: SecureRounds, *, query_id: str, timeout: float,
                                interval: float = 0.1) -> SecureQueryStatus:
    """Wait until the round finished (or ``timeout`` passed) and return its state."""
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.to_thread(tick_secure_rounds, rounds)
        status = secure_query_status(rounds, query_id=query_id)
        if status.status in ("completed", "failed") or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(interval)
