"""Answering a query: policy check, budget charge, DP computation, signature, record.

All in one database transaction, so a release is charged exactly when it is recorded, before
it is returned; a crash before the commit leaves neither a charge nor a release. A query id
seen before is answered with the *stored* release (no new noise, no new charge), so a retried
or redelivered query cannot be used to average noise away or to double-charge the budget.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from node._aggregate import MECHANISM, PRIVACY_UNIT, RECORD_SCHEMA, compute_release
from node._budget import charge_budget, to_nano
from node._db import RecordRow, ReleaseRow, utcnow
from node._errors import QueryRefusedError
from node._home import NodeContext
from node._policy import check_query
from protocols import AggregateQuery, NodeAnswer, SignedAnswer, canonical_json, sign

__all__ = ["answer_query", "load_records"]

_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
_RELEASES = ReleaseRow.__table__  # type: ignore[attr-defined]


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


def _query_text(query: AggregateQuery) -> str:
    return canonical_json(query.model_dump(mode="json")).decode("utf-8")


def _stored(connection: Connection, query: AggregateQuery) -> SignedAnswer | None:
    row = connection.execute(
        select(_RELEASES.c.query_json, _RELEASES.c.answer_json).where(
            _RELEASES.c.query_id == query.query_id
        )
    ).first()
    if row is None:
        return None
    if row.query_json != _query_text(query):
        raise QueryRefusedError(
            f"query id {query.query_id} was already used for a different query; "
            "use a fresh query id",
            rule="query_id",
        )
    return SignedAnswer.model_validate_json(row.answer_json)


def _signed(context: NodeContext, answer: NodeAnswer) -> SignedAnswer:
    payload: dict[str, Any] = answer.model_dump(mode="json")
    return SignedAnswer(
        answer=answer, signature=sign(context.private_key, payload), key_id=context.key_id
    )


def answer_query(*, context: NodeContext, query: AggregateQuery) -> SignedAnswer:
    """Release ``query``'s DP answer, charged to the budget; or raise why not.

    Raises :class:`~node.QueryRefusedError` (policy) or :class:`~node.BudgetExceededError`
    (requested vs remaining epsilon); in both cases nothing is charged or released.
    """
    policy = context.policy
    check_query(policy, query)
    with context.engine.begin() as connection:
        previous = _stored(connection, query)
        if previous is not None:
            return previous
    years = query.accounting_periods()
    try:
        with context.engine.begin() as connection:
            charge_budget(
                connection=connection,
                years=years,
                epsilon=query.epsilon,
                epsilon_per_year=policy.budget.epsilon_per_year,
            )
            computed = compute_release(
                load_records(connection=connection, query=query), query, policy.coverage
            )
            answer = NodeAnswer(
                query_id=query.query_id,
                node_id=context.settings.node_id,
                kind=query.kind,
                measure=query.measure,
                group_by=list(query.group_by),
                sums=computed.sums,
                counts=computed.counts,
                sum_scale=computed.sum_scale,
                count_scale=computed.count_scale,
                epsilon=query.epsilon,
                accounting_periods=years,
                mechanism=MECHANISM,
                privacy_unit=PRIVACY_UNIT,
                coverage=list(policy.coverage),
                released_at=utcnow(),
            )
            signed = _signed(context, answer)
            connection.execute(
                insert(_RELEASES).values(
                    query_id=query.query_id,
                    years=",".join(str(y) for y in years),
                    epsilon_nano=to_nano(query.epsilon),
                    kind=str(query.kind),
                    purpose=query.purpose,
                    query_json=_query_text(query),
                    answer_json=json.dumps(signed.model_dump(mode="json")),
                    released_at=answer.released_at,
                )
            )
    except IntegrityError:
        # The same query id was released concurrently; our charge was rolled back.
        with context.engine.begin() as connection:
            previous = _stored(connection, query)
        if previous is None:
            raise
        return previous
    return signed
