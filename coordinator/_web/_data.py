"""What the dashboard reads from the coordinator's database (read-only, no pooling here).

Balances are not stored as such: a balance is pooled queries (flows and stocks, plus world
and region totals, see :mod:`coordinator._balance`). :func:`stored_balances` finds completed
flows/stocks pairs (and their totals) and re-assembles them with
:func:`coordinator._balance.assemble_balance`, which spends no privacy budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator._balance import (
    BALANCE_FLOWS,
    assemble_balance,
    balance_epsilon,
    total_area,
)
from coordinator._db import JobRow, NodeRow, QueryRow
from coordinator._models import Balance, BalanceRequest, PooledResult
from protocols import AggregateQuery, Flow, JobState, SignedAnswer, parse_period

__all__ = [
    "NodeHealth",
    "QueryLine",
    "node_health",
    "query_lines",
    "stored_balances",
    "stored_prices",
]

#: A pull node polls at least every few seconds; silence longer than this is "not seen".
ONLINE_WITHIN = timedelta(minutes=2)
_PAIR_WITHIN = timedelta(minutes=10)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class NodeHealth:
    """A node as the dashboard shows it: status and privacy budget spent, never data."""

    node_id: str
    display_name: str
    transport: str
    active: bool
    enrolled_at: datetime
    last_seen_at: datetime | None
    health: str  # online | not seen recently | never seen | revoked
    epsilon_by_year: dict[str, float] = field(default_factory=dict)
    jobs_by_state: dict[str, int] = field(default_factory=dict)


def node_health(*, engine: Engine, now: datetime | None = None) -> list[NodeHealth]:
    """Every node with its health and the epsilon its answers state, per accounting year."""
    now = now or datetime.now(UTC)
    with Session(engine) as session:
        nodes = session.exec(select(NodeRow).order_by(col(NodeRow.node_id))).all()
        jobs = session.exec(select(JobRow, QueryRow).join(
            QueryRow, col(QueryRow.query_id) == col(JobRow.query_id))).all()
    out: dict[str, NodeHealth] = {}
    for n in nodes:
        seen = _aware(n.last_seen_at) if n.last_seen_at else None
        health = ("revoked" if not n.active else "never seen" if seen is None
                  else "online" if now - seen <= ONLINE_WITHIN else "not seen recently")
        out[n.node_id] = NodeHealth(n.node_id, n.display_name, n.transport, n.active,
                                    _aware(n.enrolled_at), seen, health)
    for job, query in jobs:
        view = out.get(job.node_id)
        if view is None:
            continue
        view.jobs_by_state[job.state] = view.jobs_by_state.get(job.state, 0) + 1
        if job.state != JobState.ANSWERED or not job.signed_answer_json:
            continue
        try:
            epsilon = SignedAnswer.model_validate_json(job.signed_answer_json).answer.epsilon
            years = AggregateQuery.model_validate_json(query.query_json).accounting_periods()
        except (ValidationError, ValueError):
            continue
        for year in years:
            view.epsilon_by_year[str(year)] = view.epsilon_by_year.get(str(year), 0.0) + epsilon
    return list(out.values())


@dataclass
class QueryLine:
    """One query of the history with, per node, its outcome and epsilon (no figures)."""

    query_id: str
    purpose: str
    requester: str
    status: str
    kind: str
    commodities: list[str]
    periods: list[str]
    epsilon: float
    quorum: int
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    published: int
    suppressed: int
    nodes: list[tuple[str, str, float | None]]  # node id, status, epsilon


def query_lines(*, engine: Engine, limit: int = 100) -> list[QueryLine]:
    """The newest ``limit`` queries, with each node's outcome and epsilon."""
    with Session(engine) as session:
        rows = session.exec(select(QueryRow).order_by(col(QueryRow.created_at).desc())
                            .limit(limit)).all()
        jobs: dict[str, list[JobRow]] = {}
        ids = [r.query_id for r in rows]
        if ids:
            for job in session.exec(select(JobRow).where(col(JobRow.query_id).in_(ids))
                                    .order_by(col(JobRow.node_id))).all():
                jobs.setdefault(job.query_id, []).append(job)
    lines = []
    for row in rows:
        try:
            query = AggregateQuery.model_validate_json(row.query_json)
        except ValidationError:
            continue  # another kind of job (e.g. synthetic data): not shown here yet
        published = suppressed = 0
        outcomes: list[tuple[str, str, float | None]] = []
        result = _pooled(row.result_json)
        if result is not None:
            published = sum(c.status == "published" for c in result.cells)
            suppressed = sum(c.status == "suppressed" for c in result.cells)
            outcomes = [(o.node_id, str(o.status), o.epsilon) for o in result.nodes]
        else:
            outcomes = [(j.node_id, j.state, None) for j in jobs.get(row.query_id, [])]
        lines.append(QueryLine(
            query_id=row.query_id, purpose=row.purpose, requester=row.requester,
            status=row.status, kind=str(query.kind),
            commodities=[str(c) for c in query.commodities], periods=list(query.periods),
            epsilon=query.epsilon, quorum=row.quorum, created_at=_aware(row.created_at),
            finished_at=_aware(row.finished_at) if row.finished_at else None, error=row.error,
            published=published, suppressed=suppressed, nodes=outcomes))
    return lines


def _pooled(text: str | None) -> PooledResult | None:
    if not text:
        return None
    try:
        return PooledResult.model_validate_json(text)
    except ValidationError:
        return None


def _is_flows(q: AggregateQuery) -> bool:
    return (list(q.flows) == BALANCE_FLOWS and list(q.group_by) == ["country", "stage", "flow"]
            and len(q.commodities) == 1 and len(q.periods) == 1)


def _is_stocks(q: AggregateQuery) -> bool:
    return (list(q.flows) == [Flow.STOCK_LEVEL] and len(q.commodities) == 1
            and list(q.group_by) == ["country", "stage", "period"] and len(q.periods) == 2)


def _pair(flows: PooledResult, candidates: Sequence[PooledResult]) -> PooledResult | None:
    fq = flows.query
    year = parse_period(fq.periods[0])
    wanted = [str(year.previous_year()), str(year)]
    best: PooledResult | None = None
    for s in candidates:
        sq = s.query
        if (sq.commodities != fq.commodities or list(sq.periods) != wanted
                or sq.purpose != fq.purpose or sq.min_contributors != fq.min_contributors
                or balance_epsilon(fq, sq) is None
                or abs(s.created_at - flows.created_at) > _PAIR_WITHIN):
            continue
        if best is None or (abs(s.created_at - flows.created_at)
                            < abs(best.created_at - flows.created_at)):
            best = s
    return best


def stored_balances(*, engine: Engine) -> list[Balance]:
    """Balances of completed flows/stocks query pairs; the newest per commodity and year."""
    with Session(engine) as session:
        texts = session.exec(select(QueryRow.result_json).where(
            QueryRow.status == "completed", col(QueryRow.result_json).is_not(None))
            .order_by(col(QueryRow.created_at).desc())).all()
    results = [r for r in (_pooled(t) for t in texts) if r is not None]
    flows = [r for r in results if _is_flows(r.query)]
    stocks = [r for r in results if _is_stocks(r.query)]
    used: set[str] = set()
    out: dict[tuple[str, str], Balance] = {}
    for f in flows:  # newest first
        s = _pair(f, [c for c in stocks if c.query.query_id not in used])
        if s is None:
            continue
        used.add(s.query.query_id)
        key = (str(f.query.commodities[0]), f.query.periods[0])
        if key in out:
            continue
        try:
            request = BalanceRequest(
                commodity=f.query.commodities[0], period=f.query.periods[0],
                epsilon=balance_epsilon(f.query, s.query) or f.query.epsilon,
                unit_sum_bound=f.query.bounds.unit_sum_bound,
                stock_unit_bound=s.query.bounds.unit_sum_bound,
                min_contributors=f.query.min_contributors, purpose=f.query.purpose)
        except ValidationError:
            continue
        # world and region totals run with this balance (same purpose, bounds, time)
        totals = [t for t in results if total_area(t.query) is not None
                  and t.query.commodities == f.query.commodities
                  and t.query.periods == f.query.periods and t.query.purpose == f.query.purpose
                  and t.query.bounds == f.query.bounds
                  and abs(t.created_at - f.created_at) <= _PAIR_WITHIN]
        out[key] = assemble_balance(request, f, s, totals)
    return [out[k] for k in sorted(out)]


def stored_prices(*, engine: Engine) -> list[PooledResult]:
    """Completed pooled monthly mean price queries (see :func:`coordinator.price_query`)."""
    with Session(engine) as session:
        texts = session.exec(select(QueryRow.result_json).where(
            QueryRow.status == "completed", col(QueryRow.result_json).is_not(None))).all()
    results = [r for r in (_pooled(t) for t in texts) if r is not None]
    return [r for r in results if list(r.query.flows) == [Flow.PRICE]
            and list(r.query.group_by) == ["period"] and len(r.query.commodities) == 1]
