"""Releasing answers: budget charged before anything leaves, refusals, idempotency, races."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

import node
from node._db import ReleaseRow
from protocols import SignedAnswer, verify
from tests.unit.node.conftest import cobalt_query, insert_records, make_record

NodeFactory = Callable[..., node.NodeContext]


def spent(context: node.NodeContext) -> dict[int, float]:
    return {b.year: b.spent for b in node.budget_status(
        engine=context.engine, epsilon_per_year=context.policy.budget.epsilon_per_year)}


def release_count(context: node.NodeContext) -> int:
    with context.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(ReleaseRow.__table__)).scalar_one()
        conn.rollback()
    return int(count)


def test_a_release_is_signed_and_charged_to_every_year_it_touches(make_node: NodeFactory) -> None:
    context = make_node()
    insert_records(context, [make_record("a"), make_record("b", period="2023-05")])
    signed = node.answer_query(context=context, query=cobalt_query(periods=["2023", "2024"],
                                                                  epsilon=0.75))
    verify(context.public_key, signed.answer.model_dump(mode="json"), signed.signature)
    assert signed.key_id == context.key_id
    assert signed.answer.accounting_periods == [2023, 2024]
    assert spent(context) == {2023: 0.75, 2024: 0.75}
    assert signed.answer.sums is not None and len(signed.answer.sums) == 4
    assert signed.answer.counts is None


def test_the_same_query_id_returns_the_stored_release_without_a_new_charge(
    make_node: NodeFactory,
) -> None:
    context = make_node()
    insert_records(context, [make_record("a")])
    query = cobalt_query()
    first = node.answer_query(context=context, query=query)
    second = node.answer_query(context=context, query=query)
    assert second == first  # same noise: a retry cannot average the noise away
    assert spent(context) == {2024: 1.0}
    assert release_count(context) == 1


def test_a_query_id_reused_for_another_query_is_refused(make_node: NodeFactory) -> None:
    context = make_node()
    query = cobalt_query()
    node.answer_query(context=context, query=query)
    other = query.model_copy(update={"epsilon": 0.5})
    with pytest.raises(node.QueryRefusedError, match="already used for a different query"):
        node.answer_query(context=context, query=other)
    assert spent(context) == {2024: 1.0}


def test_over_budget_is_refused_with_requested_and_remaining(make_node: NodeFactory) -> None:
    context = make_node(epsilon_per_year=2.5)
    for _ in range(2):
        node.answer_query(context=context, query=cobalt_query())
    with pytest.raises(node.BudgetExceededError) as caught:
        node.answer_query(context=context, query=cobalt_query())
    assert caught.value.requested == 1.0
    assert caught.value.remaining == {2024: 0.5}
    assert "requested epsilon 1 per year, but 2024: 0.5 remaining" in str(caught.value)
    assert spent(context) == {2024: 2.0}
    assert release_count(context) == 2


def test_refusal_in_one_year_charges_no_year(make_node: NodeFactory) -> None:
    context = make_node(epsilon_per_year=1.5)
    node.answer_query(context=context, query=cobalt_query(periods=["2024"]))
    with pytest.raises(node.BudgetExceededError):
        node.answer_query(context=context, query=cobalt_query(periods=["2023", "2024"]))
    assert spent(context) == {2024: 1.0}  # the 2023 charge was rolled back too


@pytest.mark.parametrize(("overrides", "rule"), [
    ({"commodities": ["lithium"], "flows": ["production"]}, None),
    ({"epsilon": 3.0}, "max_epsilon_per_release"),
    ({"min_contributors": 3}, None),
])
def test_policy_rules(make_node: NodeFactory, overrides: dict[str, Any], rule: str | None
                      ) -> None:
    context = make_node(max_epsilon_per_release=2.0)
    query = cobalt_query(**overrides)
    if rule is None:
        assert isinstance(node.answer_query(context=context, query=query), SignedAnswer)
    else:
        with pytest.raises(node.QueryRefusedError) as caught:
            node.answer_query(context=context, query=query)
        assert caught.value.rule == rule
        assert spent(context) == {}


def test_policy_refuses_disallowed_commodity_kind_and_contributors(
    make_node: NodeFactory,
) -> None:
    context = make_node()
    context.policy.release.allowed_commodities = [c for c in context.policy.release
                                                  .allowed_commodities if c != "lithium"]
    context.policy.release.allowed_kinds = [k for k in context.policy.release.allowed_kinds
                                            if k != "count"]
    context.policy.release.min_contributors = 5
    with pytest.raises(node.QueryRefusedError, match="commodity lithium is not allowed"):
        node.answer_query(context=context, query=cobalt_query(
            commodities=["lithium"], min_contributors=5))
    with pytest.raises(node.QueryRefusedError, match="query kind count is not allowed"):
        node.answer_query(context=context, query=cobalt_query(kind="count", min_contributors=5))
    with pytest.raises(node.QueryRefusedError, match="requires at least 5"):
        node.answer_query(context=context, query=cobalt_query(min_contributors=4))


def test_a_failure_while_computing_charges_nothing(make_node: NodeFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    context = make_node()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("node._release.compute_release", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        node.answer_query(context=context, query=cobalt_query())
    assert spent(context).get(2024, 0.0) == 0.0
    assert release_count(context) == 0


def concurrent_releases(context: node.NodeContext, attempts: int) -> tuple[int, int]:
    """Run ``attempts`` releases of epsilon 1 at once; return (released, refused)."""
    def attempt(_: int) -> bool:
        try:
            node.answer_query(context=context, query=cobalt_query())
        except node.BudgetExceededError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(attempts)))
    return sum(results), len(results) - sum(results)


def test_concurrent_releases_never_overspend_on_sqlite(make_node: NodeFactory) -> None:
    context = make_node(epsilon_per_year=5.0)
    insert_records(context, [make_record("a")])
    assert concurrent_releases(context, 16) == (5, 11)
    assert spent(context) == {2024: 5.0}
    assert release_count(context) == 5


@pytest.mark.postgres
def test_concurrent_releases_never_overspend_on_postgres(make_node: NodeFactory,
                                                         postgres_url: str) -> None:
    context = make_node(database_url=postgres_url, epsilon_per_year=5.0)
    insert_records(context, [make_record("a")])
    assert concurrent_releases(context, 16) == (5, 11)
    assert spent(context) == {2024: 5.0}
    assert release_count(context) == 5


@pytest.mark.postgres
def test_concurrent_retries_of_one_query_charge_once_on_postgres(make_node: NodeFactory,
                                                                 postgres_url: str) -> None:
    context = make_node(database_url=postgres_url)
    query = cobalt_query()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: node.answer_query(context=context, query=query),
                                range(6)))
    assert all(a == answers[0] for a in answers)
    assert spent(context) == {2024: 1.0}
