"""Releasing a DP synthetic table (data tier ``bulk``), charged like any other release.

As for aggregates (:mod:`node._releasing`): the budget is reserved, the synthesizer is fitted
on the node's records inside its declared coverage, rows are sampled and evaluated locally,
and the signed release, its ledger entry and the settlement are recorded together before it
is returned. The same query id returns the stored release (no second charge, no second fit).

What leaves the node: synthetic rows (DP: the fit is ``(epsilon, 0)``-DP per contribution
unit-year, see :mod:`synthetic`), the privacy spent, a DP estimate of the number of records
the rows stand for, and the evaluation scores the owner's policy allows
(``release.synthetic_evaluation``). The scores are computed from real records and are not
DP: they are rounded and limited to what the policy lists.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from sqlalchemy import Connection, select

from node._db import RecordRow, utcnow
from node._errors import QueryRefusedError
from node._home import NodeContext
from node._ledger import ReleaseOrigin
from node._policy import Policy
from node._releasing import ReleaseSpec, release_once
from protocols import (
    DataTier,
    PrivacyCost,
    SignedSyntheticAnswer,
    SyntheticAnswer,
    SyntheticQuery,
    sign,
)

__all__ = ["check_synthetic", "release_synthetic"]

_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
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
                      tier: DataTier = DataTier.BULK,
                      origin: ReleaseOrigin | None = None) -> SignedSyntheticAnswer:
    """Fit, sample, evaluate and release a synthetic table, charged to the budget and signed
    into the ledger (:mod:`node._releasing`)."""
    from synthetic import fit_synthesizer, split_holdout

    origin = origin or ReleaseOrigin(tier=tier)
    check_synthetic(context.policy, query, origin.tier)
    years = query.accounting_periods()
    spec = ReleaseSpec(
        query_id=query.query_id, query=query.model_dump(mode="json"), purpose=query.purpose,
        kind="synthetic", mechanism=f"synthetic/{query.method}",
        cost=PrivacyCost(epsilon=query.epsilon), accounting_periods=years)

    def compute() -> SignedSyntheticAnswer:
        with context.engine.connect() as connection:
            records = _records(connection, context, query)
            connection.rollback()
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
        return SignedSyntheticAnswer(
            answer=answer, signature=sign(context.private_key, answer.model_dump(mode="json")),
            key_id=context.key_id)

    return release_once(context=context, spec=spec, origin=origin, compute=compute,
                        payload=lambda s: s.answer.model_dump(mode="json"))
