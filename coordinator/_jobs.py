"""The job queue: a pooled query becomes one job per active node, persisted.

Life of a query (every step is a database transaction, so a restarted coordinator carries
on from where it stopped):

1. :func:`submit_query` stores the query (status ``queued``) and one ``queued`` job per active
   node, with the query's quorum (answers needed) and deadline.
2. Pull nodes fetch their next job with :func:`next_job` (``delivered``); push nodes are sent
   theirs by :mod:`coordinator._push`.
3. Nodes report :func:`record_status` (``running``, ``awaiting_approval``), then
   :func:`record_result` or :func:`record_refusal`. A job's result counts once: a retried
   post of the same result is acknowledged and ignored.
4. :func:`finalize_query` completes the query once every job is final, or once the deadline
   has passed (unfinished jobs become ``expired``): the answered jobs are pooled; with fewer
   answers than the quorum the query ``failed`` and says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator._db import JobRow, NodeRow, QueryRow, utcnow
from coordinator._differencing import check_submission, guard_cells, remember_published
from coordinator._errors import UnknownQueryError
from coordinator._models import NodeOutcome, NodeStatus, PooledResult
from coordinator._notify import jobs_queued
from coordinator._pooling import pool_answers
from coordinator._receipts import store_receipt
from coordinator._synthetic import PooledSynthetic, check_synthetic_answer, pool_synthetic
from coordinator._verify import check_answer
from protocols import (
    FINAL_JOB_STATES,
    AggregateQuery,
    AnyAnswer,
    AnyQuery,
    DataTier,
    JobSpec,
    JobState,
    SignedAnswer,
    SignedSyntheticAnswer,
    SyntheticQuery,
    canonical_json,
    parse_answer,
    parse_query,
)

__all__ = [
    "JobConflictError",
    "deliver_jobs",
    "due_queries",
    "finalize_query",
    "job_spec",
    "next_job",
    "query_result",
    "record_refusal",
    "record_result",
    "record_status",
    "submit_query",
]


class JobConflictError(Exception):
    """A node reported on a job that is not its own, or in a state that does not allow it."""


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _query_text(query: AnyQuery) -> str:
    return canonical_json(query.model_dump(mode="json")).decode("utf-8")


def submit_query(*, engine: Engine, query: AnyQuery, quorum: int, deadline_seconds: float,
                 tier: DataTier = DataTier.STANDARDISED, requester: str = "operator",
                 now: datetime | None = None) -> PooledResult | PooledSynthetic:
    """Queue ``query`` for every active node (idempotent per query id)."""
    now = now or utcnow()
    with Session(engine) as session:
        existing = session.get(QueryRow, query.query_id)
        if existing is not None:
            if existing.query_json != _query_text(query):
                raise UnknownQueryError(f"query id {query.query_id} is taken by another query")
            return _result(session, existing)
        nodes = session.exec(select(NodeRow).where(col(NodeRow.active))).all()
        participants = sorted(n.node_id for n in nodes)
        if isinstance(query, AggregateQuery):
            check_submission(session=session, query=query, participants=participants)
        row = QueryRow(query_id=query.query_id, purpose=query.purpose, requester=requester,
                       tier=str(tier), status="queued", quorum=quorum,
                       deadline=now + timedelta(seconds=deadline_seconds),
                       query_json=_query_text(query), created_at=now,
                       participants=",".join(participants))
        session.add(row)
        session.flush()
        for node in nodes:
            session.add(JobRow(job_id=uuid.uuid4().hex, query_id=query.query_id,
                               node_id=node.node_id, state=str(JobState.QUEUED),
                               created_at=now, updated_at=now))
        if not nodes:
            row.status, row.error, row.finished_at = "failed", "no node is enrolled", now
        session.commit()
        session.refresh(row)
        result = _result(session, row)
    jobs_queued()
    return result


def job_spec(row: JobRow, query: QueryRow) -> JobSpec:
    """The job as the node receives it."""
    participants = (None if query.participants is None
                    else [p for p in query.participants.split(",") if p])
    return JobSpec(job_id=row.job_id, query=parse_query(query.query_json),
                   tier=DataTier(query.tier), requester=query.requester,
                   deadline=_aware(query.deadline), participants=participants)


def deliver_jobs(*, engine: Engine, query_id: str, node_ids: set[str]) -> dict[str, JobSpec]:
    """Mark the query's queued jobs of ``node_ids`` delivered (push mode); return them."""
    now = utcnow()
    with Session(engine) as session:
        query = session.get(QueryRow, query_id)
        if query is None:
            raise UnknownQueryError(f"no query with id {query_id}")
        jobs = session.exec(select(JobRow).where(
            JobRow.query_id == query_id, JobRow.state == str(JobState.QUEUED),
            col(JobRow.node_id).in_(node_ids))).all()
        specs = {}
        for job in jobs:
            job.state, job.updated_at = str(JobState.DELIVERED), now
            session.add(job)
            specs[job.node_id] = job_spec(job, query)
        if specs:
            query.status = "running"
            session.add(query)
        session.commit()
        return specs


def next_job(*, engine: Engine, node_id: str, now: datetime | None = None) -> JobSpec | None:
    """The node's oldest job not yet delivered (now ``delivered``), or a redelivery.

    A job delivered earlier but never reported on (the node may have crashed) is delivered
    again: the node recognises its id and does not answer twice.
    """
    now = now or utcnow()
    with Session(engine) as session:
        candidates = session.exec(
            select(JobRow, QueryRow)
            .join(QueryRow, col(QueryRow.query_id) == col(JobRow.query_id))
            .where(JobRow.node_id == node_id,
                   col(JobRow.state).in_([str(JobState.QUEUED), str(JobState.DELIVERED)]),
                   col(QueryRow.status).in_(["queued", "running"]))
            .order_by(col(JobRow.state).desc(), col(JobRow.created_at))  # queued first
        ).all()
        for job, query in candidates:
            if _aware(query.deadline) <= now:
                continue
            if job.state == JobState.DELIVERED and now - _aware(job.updated_at) < timedelta(
                    seconds=30):
                continue  # delivered moments ago: the node is working on it
            job.state, job.updated_at = str(JobState.DELIVERED), now
            query.status = "running"
            session.add(job)
            session.add(query)
            session.commit()
            return job_spec(job, query)
    return None


def _own_job(session: Session, node_id: str, job_id: str) -> tuple[JobRow, QueryRow]:
    job = session.get(JobRow, job_id)
    if job is None or job.node_id != node_id:
        raise JobConflictError(f"job {job_id} is not a job of node {node_id}")
    query = session.get(QueryRow, job.query_id)
    assert query is not None
    return job, query


def record_status(*, engine: Engine, node_id: str, job_id: str, state: JobState,
                  message: str | None = None) -> None:
    """A node reports ``running`` or ``awaiting_approval``; ignored once a job is final."""
    if state not in (JobState.RUNNING, JobState.AWAITING_APPROVAL):
        raise JobConflictError(f"a node cannot report state {state}")
    with Session(engine) as session:
        job, _ = _own_job(session, node_id, job_id)
        if JobState(job.state) in FINAL_JOB_STATES:
            return
        job.state, job.message, job.updated_at = str(state), message, utcnow()
        session.add(job)
        session.commit()


def record_result(*, engine: Engine, node_id: str, public_key: str, job_id: str,
                  answer: AnyAnswer) -> bool:
    """Store a verified answer; ``False`` if this job already had a final outcome.

    Raises ``ValueError`` if the answer does not verify or does not match the job's query.
    """
    with Session(engine) as session:
        job, query = _own_job(session, node_id, job_id)
        query_id = query.query_id
        if JobState(job.state) in FINAL_JOB_STATES:
            return False
        asked = parse_query(query.query_json)
        if isinstance(asked, SyntheticQuery) and isinstance(answer, SignedSyntheticAnswer):
            check_synthetic_answer(node_id=node_id, public_key=public_key, query=asked,
                                   signed=answer)
        elif isinstance(asked, AggregateQuery) and isinstance(answer, SignedAnswer):
            check_answer(node_id=node_id, public_key=public_key, query=asked, signed=answer)
        else:
            raise ValueError("the answer is not of the kind the query asks for")
        job.state, job.updated_at = str(JobState.ANSWERED), utcnow()
        job.signed_answer_json = answer.model_dump_json()
        session.add(job)
        store_receipt(session=session, job_id=job_id, receipt=answer.receipt)
        session.commit()
    finalize_query(engine=engine, query_id=query_id)
    return True


def record_refusal(*, engine: Engine, node_id: str, job_id: str, reason: str,
                   message: str) -> bool:
    """Store a node's refusal; ``False`` if this job already had a final outcome."""
    with Session(engine) as session:
        job, query = _own_job(session, node_id, job_id)
        query_id = query.query_id
        if JobState(job.state) in FINAL_JOB_STATES:
            return False
        job.state, job.updated_at = str(JobState.REFUSED), utcnow()
        job.refusal_reason, job.message = reason, message[:2000]
        session.add(job)
        session.commit()
    finalize_query(engine=engine, query_id=query_id)
    return True


def _outcome(job: JobRow) -> NodeOutcome:
    state = JobState(job.state)
    if state is JobState.ANSWERED:
        signed = parse_answer(job.signed_answer_json or "{}")
        return NodeOutcome(node_id=job.node_id, status=NodeStatus.ANSWERED,
                           epsilon=signed.answer.epsilon, signed=signed)
    if state is JobState.REFUSED:
        status = (NodeStatus.BUDGET_EXCEEDED if job.refusal_reason == "budget_exceeded"
                  else NodeStatus.INVALID if job.refusal_reason == "invalid"
                  else NodeStatus.UNREACHABLE if job.refusal_reason == "unreachable"
                  else NodeStatus.REFUSED)
        return NodeOutcome(node_id=job.node_id, status=status, message=job.message)
    if state is JobState.EXPIRED:
        return NodeOutcome(node_id=job.node_id, status=NodeStatus.EXPIRED, message=job.message)
    return NodeOutcome(node_id=job.node_id, status=NodeStatus.PENDING,
                       message=f"job {state}" + (f": {job.message}" if job.message else ""))


def _jobs(session: Session, query_id: str) -> Sequence[JobRow]:
    return session.exec(select(JobRow).where(JobRow.query_id == query_id)
                        .order_by(col(JobRow.node_id))).all()


def _result(session: Session, row: QueryRow) -> PooledResult | PooledSynthetic:
    query = parse_query(row.query_json)
    if isinstance(query, SyntheticQuery):
        if row.result_json is not None:
            return PooledSynthetic.model_validate_json(row.result_json)
        return PooledSynthetic(
            query=query, status=row.status,
            nodes=[_outcome(j) for j in _jobs(session, row.query_id)],
            created_at=_aware(row.created_at), quorum=row.quorum,
            deadline=_aware(row.deadline), error=row.error)
    if row.result_json is not None:
        return PooledResult.model_validate_json(row.result_json)
    return PooledResult(
        query=query, status=row.status, cells=[],
        nodes=[_outcome(j) for j in _jobs(session, row.query_id)],
        created_at=_aware(row.created_at), quorum=row.quorum,
        deadline=_aware(row.deadline), error=row.error,
    )


def finalize_query(*, engine: Engine, query_id: str, now: datetime | None = None) -> bool:
    """Complete or fail the query if every job is final or the deadline passed.

    Returns whether the query is finished (now or before).
    """
    now = now or utcnow()
    with Session(engine) as session:
        row = session.get(QueryRow, query_id)
        if row is None:
            raise UnknownQueryError(f"no query with id {query_id}")
        if row.status in ("completed", "failed"):
            return True
        past_deadline = now >= _aware(row.deadline)
        states = session.exec(select(JobRow.state).where(JobRow.query_id == query_id)).all()
        if not states:
            return False  # a secure query: its round (coordinator._secure_rounds) finishes it
        if not past_deadline and any(JobState(s) not in FINAL_JOB_STATES for s in states):
            return False  # cheap check first: answers are only loaded to pool them
        jobs = _jobs(session, query_id)
        for job in jobs:
            if JobState(job.state) not in FINAL_JOB_STATES:
                job.message = f"no answer by the deadline (last state: {job.state})"
                job.state, job.updated_at = str(JobState.EXPIRED), now
                session.add(job)
        outcomes = [_outcome(j) for j in jobs]
        signed = [o.signed for o in outcomes if o.signed is not None]
        query = parse_query(row.query_json)
        failed = len(signed) < row.quorum
        error = None
        if failed:
            missing = "; ".join(f"{o.node_id}: {o.status}" + (f" ({o.message})" if o.message
                                                            else "")
                                for o in outcomes if o.status is not NodeStatus.ANSWERED)
            error = (f"only {len(signed)} of the {row.quorum} answers required arrived "
                     f"by the deadline" + (f": {missing}" if missing else ""))
        status = "failed" if failed else "completed"
        common: dict[str, Any] = {
            "status": status, "nodes": outcomes, "created_at": _aware(row.created_at),
            "finished_at": now, "quorum": row.quorum, "deadline": _aware(row.deadline),
            "error": error}
        result: PooledResult | PooledSynthetic
        if isinstance(query, SyntheticQuery):
            tables = [s for s in signed if isinstance(s, SignedSyntheticAnswer)]
            rows, extras = pool_synthetic(query, [] if failed else tables)
            result = PooledSynthetic(query=query, rows=rows, **extras, **common)
        else:
            answers = [s.answer for s in signed if isinstance(s, SignedAnswer)]
            cells = [] if failed else pool_answers(query, answers)
            published = guard_cells(session=session, query=query, answers=answers, cells=cells)
            remember_published(session=session, query_id=query_id, published=published)
            result = PooledResult(query=query, cells=cells, **common)
        row.status, row.error, row.finished_at = result.status, error, now
        row.result_json = result.model_dump_json()
        session.add(row)
        session.commit()
    return True


def query_result(*, engine: Engine, query_id: str) -> PooledResult | PooledSynthetic:
    """The query's current state, with its pooled cells once completed."""
    with Session(engine) as session:
        row = session.get(QueryRow, query_id)
        if row is None:
            raise UnknownQueryError(f"no query with id {query_id}")
        return _result(session, row)


def due_queries(*, engine: Engine, now: datetime | None = None) -> list[str]:
    """Ids of unfinished queries whose deadline has passed."""
    now = now or utcnow()
    with Session(engine) as session:
        rows = session.exec(select(QueryRow).where(
            col(QueryRow.status).in_(["queued", "running"]))).all()
        return [r.query_id for r in rows if _aware(r.deadline) <= now]
