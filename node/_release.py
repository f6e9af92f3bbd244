"""Answering an aggregate query: policy and differencing checks, then one guarded release.

The budget is reserved before computing and settled in the transaction that records the
release and its ledger entry (:mod:`node._releasing`), before anything is returned. A query
id seen before is answered with the *stored* release (no new noise, no new charge), so a
retried or redelivered query cannot be used to average noise away or to double-charge.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from sqlalchemy import Connection, select

from node._aggregate import MECHANISM, PRIVACY_UNIT, RECORD_SCHEMA, compute_release
from node._db import RecordRow, utcnow
from node._differencing import check_differencing
from node._home import NodeContext
from node._ledger import ReleaseOrigin
from node._policy import check_query
from node._releasing import ReleaseSpec, release_once, stored_release
from protocols import AggregateQuery, NodeAnswer, PrivacyCost, SignedAnswer, sign

__all__ = ["answer_query", "load_records"]

_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]


def load_records(*, connection: Connection, query: AggregateQuery) -> pl.DataFrame:
    """The node's records that may fall in ``query`` (coarse SQL filter), as a Polars frame."""
    columns = [_RECORDS.c[name] for name in RECORD_SCHEMA]
    stmt = select(*columns).where(
        _RECORDS.c.commodity.in_([str(c) for c in query.commodities]),
        _RECORDS.c.flow.in_([str(f) for f in query.flows]),
        _RECORDS.c.year.in_(query.accounting_periods()),
    )
    rows = connection.execute(stmt).fetchall()
    return pl.DataFrame(
        [tuple(row) for row in rows], schema=RECORD_SCHEMA, orient="row"
    )


def _signed(context: NodeContext, answer: NodeAnswer) -> SignedAnswer:
    payload: dict[str, Any] = answer.model_dump(mode="json")
    return SignedAnswer(
        answer=answer, signature=sign(context.private_key, payload), key_id=context.key_id
    )


def answer_query(*, context: NodeContext, query: AggregateQuery,
                 origin: ReleaseOrigin | None = None) -> SignedAnswer:
    """Release ``query``'s DP answer, charged to the budget and signed into the ledger; or
    raise why not.

    ``origin`` says who asked, in which tier and job, and to which nodes the query went (for
    the differencing guard); push-mode queries have none. Raises
    :class:`~node.QueryRefusedError` (policy, differencing) or
    :class:`~node.BudgetExceededError` (requested vs remaining epsilon); in both cases nothing
    is charged or released.
    """
    origin = origin or ReleaseOrigin()
    policy = context.policy
    check_query(policy, query)
    spec = ReleaseSpec(
        query_id=query.query_id, query=query.model_dump(mode="json"), purpose=query.purpose,
        kind="aggregate", mechanism=MECHANISM, cost=PrivacyCost(epsilon=query.epsilon),
        accounting_periods=query.accounting_periods())
    with context.engine.begin() as connection:
        if stored_release(connection=connection, spec=spec) is None:
            guarded = check_differencing(connection=connection, query=query,
                                         coverage=policy.coverage,
                                         participants=origin.participants)
        else:
            guarded = None

    def compute() -> SignedAnswer:
        with context.engine.connect() as connection:
            records = load_records(connection=connection, query=query)
            connection.rollback()
        computed = compute_release(records, query, policy.coverage)
        return _signed(context, NodeAnswer(
            query_id=query.query_id, node_id=context.settings.node_id, kind=query.kind,
            measure=query.measure, group_by=list(query.group_by), sums=computed.sums,
            counts=computed.counts, sum_scale=computed.sum_scale,
            count_scale=computed.count_scale, epsilon=query.epsilon,
            accounting_periods=spec.accounting_periods, mechanism=MECHANISM,
            privacy_unit=PRIVACY_UNIT, coverage=list(policy.coverage), released_at=utcnow()))

    return release_once(context=context, spec=spec, origin=origin, compute=compute,
                        guarded=guarded, payload=lambda s: s.answer.model_dump(mode="json"))
