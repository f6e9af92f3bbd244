"""The node's side of jobs: receive, decide (policy and approval), run, and what to report.

Everything is in the node's database, so a node killed at any point resumes where it
stopped: a job left ``running`` is run again, which is harmless because a release is keyed by
its query id (the stored answer is returned; the budget is not charged twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from node._db import JobRow, ReleaseRow, utcnow
from node._errors import BudgetExceededError, NodeError, QueryRefusedError
from node._home import NodeContext
from node._ledger import ReleaseOrigin
from node._policy import check_query
from node._release import answer_query
from node._synthetic_release import check_synthetic, release_synthetic
from protocols import (
    AnyAnswer,
    DataTier,
    JobSpec,
    JobState,
    SyntheticQuery,
    canonical_json,
    parse_answer,
    parse_query,
)

__all__ = [
    "REPORTABLE_STATES",
    "JobNotFoundError",
    "approve_job",
    "deny_job",
    "list_jobs",
    "mark_reported",
    "receive_job",
    "run_job",
    "runnable_jobs",
    "stored_answer",
    "unreported_jobs",
]

#: States the coordinator is told about.
REPORTABLE_STATES = frozenset({JobState.AWAITING_APPROVAL, JobState.ANSWERED, JobState.REFUSED})


class JobNotFoundError(NodeError):
    """No job with this id, or not in a state that allows the action."""


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def receive_job(*, context: NodeContext, spec: JobSpec) -> JobRow:
    """Record a job (or find it again, if redelivered) and decide what happens to it.

    A new job is refused at once if the policy forbids it, held (``awaiting_approval``) if an
    approval rule says manual, and otherwise set ``running``.
    """
    with Session(context.engine) as session:
        existing = session.get(JobRow, spec.job_id)
        if existing is not None:
            return existing
        query = spec.query
        row = JobRow(
            job_id=spec.job_id, query_id=query.query_id, state=str(JobState.DELIVERED),
            tier=str(spec.tier), requester=spec.requester, purpose=query.purpose,
            kind=str(query.kind), epsilon=query.epsilon,
            years=",".join(str(y) for y in query.accounting_periods()),
            query_json=canonical_json(query.model_dump(mode="json")).decode("utf-8"),
            deadline=spec.deadline,
            participants=(",".join(spec.participants) if spec.participants is not None
                          else None),
        )
        try:
            if isinstance(query, SyntheticQuery):
                check_synthetic(context.policy, query, DataTier(spec.tier))
            else:
                check_query(context.policy, query)
        except QueryRefusedError as exc:
            row.state, row.outcome_reason, row.outcome_message = (
                str(JobState.REFUSED), "query_refused", str(exc))
        else:
            row.approval = context.policy.approval.mode_for(query, DataTier(spec.tier))
            row.state = str(JobState.AWAITING_APPROVAL if row.approval == "manual"
                            else JobState.RUNNING)
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def run_job(*, context: NodeContext, job_id: str, now: datetime | None = None) -> JobRow:
    """Compute a ``running`` job's release (charged to the budget) or record why not."""
    now = now or utcnow()
    with Session(context.engine) as session:
        row = session.get(JobRow, job_id)
        if row is None or row.state != JobState.RUNNING:
            raise JobNotFoundError(f"no running job {job_id}")
        query = parse_query(row.query_json)
        tier = DataTier(row.tier)
        deadline = _aware(row.deadline)
        origin = ReleaseOrigin(
            requester=row.requester, tier=tier, job_id=row.job_id,
            participants=(tuple(p for p in row.participants.split(",") if p)
                          if row.participants is not None else None))
    if now >= deadline:
        return _finish(context.engine, job_id, JobState.EXPIRED, "expired",
                       f"deadline {deadline.isoformat()} passed before the job ran")
    try:
        if isinstance(query, SyntheticQuery):
            release_synthetic(context=context, query=query, tier=tier, origin=origin)
        else:
            answer_query(context=context, query=query, origin=origin)
    except BudgetExceededError as exc:
        return _finish(context.engine, job_id, JobState.REFUSED, "budget_exceeded", str(exc))
    except QueryRefusedError as exc:
        return _finish(context.engine, job_id, JobState.REFUSED, "query_refused", str(exc))
    return _finish(context.engine, job_id, JobState.ANSWERED, None, None)


def _finish(engine: Engine, job_id: str, state: JobState, reason: str | None,
            message: str | None) -> JobRow:
    with Session(engine) as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        row.state, row.outcome_reason, row.outcome_message = str(state), reason, message
        row.updated_at = utcnow()
        if state is JobState.EXPIRED:
            row.reported_state = str(state)  # the coordinator expires it on its own
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def stored_answer(*, engine: Engine, query_id: str) -> AnyAnswer:
    """The signed (aggregate or synthetic) answer released for ``query_id``."""
    with Session(engine) as session:
        release = session.get(ReleaseRow, query_id)
        if release is None:
            raise JobNotFoundError(f"no release for query {query_id}")
        return parse_answer(release.answer_json)


def runnable_jobs(*, engine: Engine) -> list[str]:
    """Ids of jobs to run now: approved, or left running by a crash."""
    with Session(engine) as session:
        rows = session.exec(select(JobRow.job_id).where(JobRow.state == str(JobState.RUNNING))
                            .order_by(col(JobRow.received_at))).all()
        return list(rows)


def unreported_jobs(*, engine: Engine) -> list[JobRow]:
    """Jobs whose state the coordinator has not acknowledged yet."""
    with Session(engine) as session:
        rows = session.exec(select(JobRow).where(
            col(JobRow.state).in_([str(s) for s in REPORTABLE_STATES]))).all()
        return [r for r in rows if r.reported_state != r.state]


def mark_reported(*, engine: Engine, job_id: str, state: str) -> None:
    """Record that the coordinator acknowledged ``state`` of the job."""
    with Session(engine) as session:
        row = session.get(JobRow, job_id)
        if row is not None:
            row.reported_state = state
            session.add(row)
            session.commit()


def list_jobs(*, engine: Engine, states: Sequence[JobState] | None = None) -> list[JobRow]:
    """Jobs, newest first, optionally only in ``states``."""
    with Session(engine) as session:
        stmt = select(JobRow).order_by(col(JobRow.received_at).desc())
        if states is not None:
            stmt = stmt.where(col(JobRow.state).in_([str(s) for s in states]))
        return list(session.exec(stmt).all())


def _held(session: Session, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id)
    if row is None:
        raise JobNotFoundError(f"no job {job_id}; list pending jobs with `dpn node requests`")
    if row.state != JobState.AWAITING_APPROVAL:
        raise JobNotFoundError(f"job {job_id} is {row.state}, not awaiting approval")
    return row


def approve_job(*, engine: Engine, job_id: str, by: str) -> JobRow:
    """A person approves a held job: it runs at the agent's next turn."""
    with Session(engine) as session:
        row = _held(session, job_id)
        row.state, row.decided_by, row.updated_at = str(JobState.RUNNING), by, utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def deny_job(*, engine: Engine, job_id: str, by: str, reason: str) -> JobRow:
    """A person denies a held job: the coordinator is told it is refused, and why."""
    with Session(engine) as session:
        row = _held(session, job_id)
        row.state, row.decided_by, row.updated_at = str(JobState.REFUSED), by, utcnow()
        row.outcome_reason, row.outcome_message = "denied", f"denied by the node owner: {reason}"
        session.add(row)
        session.commit()
        session.refresh(row)
        return row
