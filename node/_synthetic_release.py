"""Releasing a DP synthetic table (data tier ``bulk``), charged like any other release.

One database transaction, as for aggregates (:mod:`node._release`): the budget is charged,
the synthesizer is fitted on the node's records inside its declared coverage, rows are
sampled and evaluated locally, and the signed release is recorded before it is returned.
The same query id returns the stored release (no second charge, no second fit).

What leaves the node: synthetic rows (DP: the fit is ``(epsilon, 0)``-DP per contribution
unit-year, see :mod:`synthetic`), the privacy spent, a DP estimate of the number of records
the rows stand for, and the evaluation scores the owner's policy allows
(``release.synthetic_evaluation``). The scores are computed from real records and are not
DP: they are rounded and limited to what the policy lists.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from sqlalchemy import Connection, insert, select

from node._budget import charge_budget, to_nano
from node._db import RecordRow, ReleaseRow, utcnow
from node._errors import QueryRefusedError
from node._home import NodeContext
from node._policy import Policy
from protocols import (
    DataTier,
    SignedSyntheticAnswer,
    SyntheticAnswer,
    SyntheticQuery,
    canonical_json,
    parse_answer,
    sign,
)

__all__ = ["check_synthetic", "release_synthetic"]

_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
_RELEASES = ReleaseRow.__table__  # type: ignore[attr-defined]
_HOLDOUT_FRACTION = 0.2


def check_synthetic(policy: Policy, query: SyntheticQuery, tier: DataTier) -> None:
    """Raise :class:`QueryRefusedError` unless the policy releases this synthetic table."""
    release = policy.release
    if tier not in release.synthetic_tiers:
        allowed = ", ".join(str(t) for t in release.synthetic_tiers) or "none"
        raise QueryRefusedError(
            f"this node does not release synthetic data for tier {tier} (policy "
            f"release.synthetic_tiers: {allowed})", rule="synthetic_tiers")
    for commodity in query.commodities:
        if commodity not in release.allowed_commodities:
            raise QueryRefusedError(f"commodity {commodity} is not allowed by this node's "
                                    "policy", rule="allowed_commodities")
    if query.min_contributors < release.min_contributors:
        raise QueryRefusedError(
            f"query suppresses below {query.min_contributors} contributors; this node "
            f"requires at least {release.min_contributors}", rule="min_contributors")
    if query.epsilon > policy.budget.max_epsilon_per_release:
        raise QueryRefusedError(
            f"epsilon {query.epsilon} exceeds this node's maximum per release "
            f"({policy.budget.max_epsilon_per_release})", rule="max_epsilon_per_release")


def _records(connection: Connection, context: NodeContext, query: SyntheticQuery
             ) -> pl.DataFrame:
    """The node's records of the query's commodities and years, inside its coverage."""
    from synthetic import INPUT_COLUMNS

    columns = list(INPUT_COLUMNS)
    rows = connection.execute(
        select(*(_RECORDS.c[c] for c in columns))
        .where(_RECORDS.c.commodity.in_([str(c) for c in query.commodities]),
               _RECORDS.c.year.in_(query.accounting_periods()))
    ).fetchall()
    frame = pl.DataFrame([tuple(r) for r in rows], schema=columns, orient="row",
                         infer_schema_length=None)
    keys = ["commodity", "stage", "flow", "country"]
    covered = pl.DataFrame(
        [(str(e.commodity), str(s), str(f), c) for e in context.policy.coverage
         for s in e.stages for f in e.flows for c in e.countries],
        schema={k: pl.String for k in keys}, orient="row")
    return frame.join(covered, on=keys, how="semi") if frame.height else frame


def _domain(context: NodeContext, query: SyntheticQuery) -> Any:
    from synthetic import PublicDomain

    entries = [e for e in context.policy.coverage if e.commodity in query.commodities]
    if not entries:
        raise QueryRefusedError("this node declares no coverage for "
                                f"{', '.join(query.commodities)}", rule="coverage")
    return PublicDomain(
        periods=list(query.periods), quantity_max_t=query.quantity_max_t,
        price_max_usd_t=query.price_max_usd_t, commodities=[str(c) for c in query.commodities],
        stages=sorted({str(s) for e in entries for s in e.stages}),
        flows=sorted({str(f) for e in entries for f in e.flows}),
        countries=sorted({c for e in entries for c in e.countries}),
    )


def _evaluation(policy: Policy, train: pl.DataFrame, rows: pl.DataFrame,
                holdout: pl.DataFrame) -> dict[str, Any]:
    from synthetic import EvaluationError, EvaluationPolicy, evaluate_release

    wanted = set(policy.release.synthetic_evaluation)
    if not wanted:
        return {}
    try:
        report = evaluate_release(train, rows, holdout=holdout, n_attacks=200, seed=0)
    except EvaluationError as exc:
        return {"not_evaluated": str(exc)}
    return report.released(EvaluationPolicy(
        quality="quality" in wanted, risks="risks" in wanted, intervals="risks" in wanted,
        dcr="dcr" in wanted, column_scores=False, decimals=2))


def release_synthetic(*, context: NodeContext, query: SyntheticQuery,
                      tier: DataTier = DataTier.BULK) -> SignedSyntheticAnswer:
    """Fit, sample, evaluate and release a synthetic table, charged to the budget."""
    from synthetic import fit_synthesizer, split_holdout

    check_synthetic(context.policy, query, tier)
    query_text = canonical_json(query.model_dump(mode="json")).decode("utf-8")
    with context.engine.begin() as connection:
        stored = connection.execute(select(_RELEASES.c.query_json, _RELEASES.c.answer_json)
                                    .where(_RELEASES.c.query_id == query.query_id)).first()
    if stored is not None:
        if stored.query_json != query_text:
            raise QueryRefusedError(f"query id {query.query_id} was already used for a "
                                    "different query; use a fresh query id", rule="query_id")
        previous = parse_answer(stored.answer_json)
        assert isinstance(previous, SignedSyntheticAnswer)
        return previous
    years = query.accounting_periods()
    with context.engine.begin() as connection:
        charge_budget(connection=connection, years=years, epsilon=query.epsilon,
                      epsilon_per_year=context.policy.budget.epsilon_per_year)
        records = _records(connection, context, query)
        train, holdout = split_holdout(records, fraction=_HOLDOUT_FRACTION, seed=0)
        fitted = fit_synthesizer(train, method=query.method, epsilon=query.epsilon,
                                 domain=_domain(context, query),
                                 rows_per_unit=query.rows_per_unit)
        rows = fitted.sample(query.rows)
        answer = SyntheticAnswer(
            query_id=query.query_id, node_id=context.settings.node_id, method=query.method,
            columns=list(rows.columns), rows=[list(r) for r in rows.iter_rows()],
            estimated_records=round(fitted.estimated_rows, 3),
            epsilon=query.epsilon, delta=0.0, accounting_periods=years,
            privacy=fitted.privacy.as_dict(),
            evaluation=_evaluation(context.policy, train, rows, holdout),
            coverage=list(context.policy.coverage), released_at=utcnow(),
        )
        signed = SignedSyntheticAnswer(
            answer=answer, signature=sign(context.private_key, answer.model_dump(mode="json")),
            key_id=context.key_id)
        connection.execute(insert(_RELEASES).values(
            query_id=query.query_id, years=",".join(str(y) for y in years),
            epsilon_nano=to_nano(query.epsilon), kind="synthetic", purpose=query.purpose,
            query_json=query_text, answer_json=json.dumps(signed.model_dump(mode="json")),
            released_at=answer.released_at))
    return signed
