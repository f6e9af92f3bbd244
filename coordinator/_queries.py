"""Running a pooled query: queue it, push to push-mode nodes, wait for the outcome.

Pull-mode nodes fetch their jobs themselves (``/v1/jobs/poll``); push-mode nodes
(development) are sent theirs over HTTP here. Either way the outcome lands in the job table
and :func:`coordinator._jobs.finalize_query` pools it.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator._db import NodeRow
from coordinator._fanout import fan_out
from coordinator._jobs import (
    deliver_jobs,
    finalize_query,
    query_result,
    record_refusal,
    record_result,
    submit_query,
)
from coordinator._models import NodeStatus, PooledResult
from coordinator._registry import node_addresses
from coordinator._synthetic import PooledSynthetic
from protocols import AggregateQuery, DataTier

__all__ = ["deliver_push_jobs", "get_result", "run_pooled_query", "wait_for_result"]


def get_result(*, engine: Engine, query_id: str) -> PooledResult | PooledSynthetic:
    """The query's current state (raises :class:`UnknownQueryError`)."""
    return query_result(engine=engine, query_id=query_id)


async def deliver_push_jobs(*, engine: Engine, query_id: str, timeout: float) -> None:
    """Send the query's queued jobs to push-mode nodes and record their outcomes."""
    with Session(engine) as session:
        push_nodes = set(session.exec(select(NodeRow.node_id).where(
            NodeRow.transport == "push", col(NodeRow.active))).all())
    specs = deliver_jobs(engine=engine, query_id=query_id, node_ids=push_nodes)
    if not specs:
        return
    query = next(iter(specs.values())).query
    if not isinstance(query, AggregateQuery):
        for node_id, spec in specs.items():
            record_refusal(engine=engine, node_id=node_id, job_id=spec.job_id,
                           reason="refused", message="push mode carries aggregate queries only")
        return
    addresses = node_addresses(engine=engine, node_ids=list(specs))
    keys = {a.node_id: a.public_key for a in addresses}
    for outcome in await fan_out(nodes=addresses, query=query, timeout=timeout):
        job_id = specs[outcome.node_id].job_id
        if outcome.status is NodeStatus.ANSWERED and outcome.signed is not None:
            record_result(engine=engine, node_id=outcome.node_id,
                          public_key=keys[outcome.node_id], job_id=job_id,
                          answer=outcome.signed)
        else:
            record_refusal(engine=engine, node_id=outcome.node_id, job_id=job_id,
                           reason=str(outcome.status), message=outcome.message or "")


async def wait_for_result(*, engine: Engine, query_id: str, timeout: float,
                          interval: float = 0.25) -> PooledResult | PooledSynthetic:
    """Wait until the query is finished (or ``timeout`` passes) and return its state."""
    deadline = time.monotonic() + timeout
    while True:
        finished = finalize_query(engine=engine, query_id=query_id)
        if finished or time.monotonic() >= deadline:
            return query_result(engine=engine, query_id=query_id)
        await asyncio.sleep(interval)


async def run_pooled_query(*, engine: Engine, query: AggregateQuery, timeout: float,
                           quorum: int = 1, tier: DataTier = DataTier.STANDARDISED,
                           requester: str = "operator") -> PooledResult:
    """Queue ``query`` with a deadline of ``timeout`` seconds and wait for its outcome.

    A query id already submitted returns that query's state (no new jobs).
    """
    submitted = submit_query(engine=engine, query=query, quorum=quorum,
                             deadline_seconds=timeout, tier=tier, requester=requester)
    if submitted.status not in ("completed", "failed"):
        await deliver_push_jobs(engine=engine, query_id=query.query_id, timeout=timeout)
        submitted = await wait_for_result(engine=engine, query_id=query.query_id,
                                          timeout=timeout + 1)
    assert isinstance(submitted, PooledResult)  # an aggregate query pools into cells
    return submitted
