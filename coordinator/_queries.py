"""Running a pooled query: persist it, fan out, keep every node's answer, pool, persist."""

from __future__ import annotations

import json

from sqlalchemy import Engine
from sqlmodel import Session

from coordinator._db import AnswerRow, QueryRow, utcnow
from coordinator._errors import UnknownQueryError
from coordinator._fanout import fan_out
from coordinator._models import NodeStatus, PooledResult
from coordinator._pooling import pool_answers
from coordinator._registry import node_addresses
from protocols import AggregateQuery, canonical_json

__all__ = ["get_result", "run_pooled_query"]


def get_result(*, engine: Engine, query_id: str) -> PooledResult:
    """The stored result of a query (raises :class:`UnknownQueryError`)."""
    with Session(engine) as session:
        row = session.get(QueryRow, query_id)
        if row is None or row.result_json is None:
            raise UnknownQueryError(f"no completed query with id {query_id}")
        return PooledResult.model_validate_json(row.result_json)


async def run_pooled_query(*, engine: Engine, query: AggregateQuery,
                           timeout: float) -> PooledResult:
    """Ask every active node, pool what comes back, and store it all.

    A query id that already completed returns the stored result (no new release is asked
    for). Nodes that are down, refuse, or send an answer that fails verification are listed
    in the result with the reason; the others are pooled. With no answer at all the result's
    status is ``failed``.
    """
    query_text = canonical_json(query.model_dump(mode="json")).decode("utf-8")
    with Session(engine) as session:
        existing = session.get(QueryRow, query.query_id)
        if existing is not None and existing.result_json is not None:
            if existing.query_json != query_text:
                raise UnknownQueryError(f"query id {query.query_id} is taken by another query")
            return PooledResult.model_validate_json(existing.result_json)
        row = existing or QueryRow(query_id=query.query_id, purpose=query.purpose,
                                   status="running", query_json=query_text)
        created_at = row.created_at
        session.add(row)
        session.commit()
    outcomes = await fan_out(nodes=node_addresses(engine=engine), query=query, timeout=timeout)
    answers = [o.signed.answer for o in outcomes if o.signed is not None]
    result = PooledResult(
        query=query,
        status="completed" if answers else "failed",
        cells=pool_answers(query, answers),
        nodes=sorted(outcomes, key=lambda o: o.node_id),
        created_at=created_at,
        finished_at=utcnow(),
    )
    with Session(engine) as session:
        for outcome in outcomes:
            session.merge(AnswerRow(
                query_id=query.query_id, node_id=outcome.node_id, status=str(outcome.status),
                message=outcome.message,
                signed_answer_json=(json.dumps(outcome.signed.model_dump(mode="json"))
                                    if outcome.signed else None),
            ))
        stored = session.get(QueryRow, query.query_id)
        assert stored is not None
        row = stored
        row.status, row.finished_at = result.status, result.finished_at
        row.result_json = result.model_dump_json()
        if not answers:
            row.error = "no node answered: " + "; ".join(
                f"{o.node_id}: {o.message}" for o in outcomes if o.status is not NodeStatus.ANSWERED
            ) if outcomes else "no node is enrolled"
        session.add(row)
        session.commit()
    return result
