"""The node's ledger, reservations and differencing guard, end to end on a real node database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

import node
from node._budget import reserve, settle
from node._db import ReservationRow, utcnow
from node._ledger import ReleaseOrigin
from protocols import (
    DataTier,
    PrivacyCost,
    Spend,
    audit_node,
    payload_digest,
    spend_by_period,
    verify,
)
from tests.unit.node.conftest import cobalt_query, insert_records, make_record

NodeFactory = Callable[..., node.NodeContext]


def _spent(context: node.NodeContext) -> dict[int, float]:
    return {b.year: b.spent for b in node.budget_status(engine=context.engine,
                                                        epsilon_per_year=10.0)}


def test_every_release_is_in_the_ledger_with_a_receipt_the_audit_accepts(
        make_node: NodeFactory) -> None:
    context = make_node()
    insert_records(context, [make_record("a"), make_record("b", period="2023-05")])
    answers = [node.answer_query(context=context, query=cobalt_query(
        periods=periods, epsilon=eps)) for periods, eps in
        ((["2024"], 0.5), (["2023", "2024"], 0.25), (["2023"], 1.0))]
    entries = node.ledger_entries(engine=context.engine)
    assert [e.seq for e in entries] == [1, 2, 3]
    for signed, entry in zip(answers, entries, strict=True):
        receipt = signed.receipt
        assert receipt is not None and receipt.seq == entry.seq
        assert receipt.payload_sha256 == payload_digest(signed.answer.model_dump(mode="json"))
        verify(context.public_key, receipt.body(), receipt.signature)
    export = node.export_ledger(context=context)
    report = audit_node(export, [a.receipt for a in answers if a.receipt is not None],
                        now=entries[-1].recorded_at)
    assert report.ok, report.findings
    # the accountant's totals equal an independent recomputation from the ledger
    accounts = node.account_spend(engine=context.engine)
    recomputed = spend_by_period(export.entries, tier="standardised")
    assert {year: spend for (year, tier), spend in accounts.items()} == recomputed
    assert recomputed[2024] == Spend.total([PrivacyCost(epsilon=0.5), PrivacyCost(epsilon=0.25)])


def test_a_retried_query_adds_no_ledger_entry(make_node: NodeFactory) -> None:
    context = make_node()
    query = cobalt_query()
    first = node.answer_query(context=context, query=query)
    assert node.answer_query(context=context, query=query) == first
    assert len(node.ledger_entries(engine=context.engine)) == 1


def test_a_failed_computation_gives_its_reservation_back(
        make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    context = make_node()

    def broken(*_: object, **__: object) -> object:
        raise RuntimeError("disk went away")

    monkeypatch.setattr("node._release.compute_release", broken)
    with pytest.raises(RuntimeError, match="disk went away"):
        node.answer_query(context=context, query=cobalt_query())
    assert _spent(context) == {2024: 0.0}
    assert node.ledger_entries(engine=context.engine) == []


def test_a_crash_between_reserve_and_settle_is_counted_until_recovered(
        make_node: NodeFactory) -> None:
    context = make_node()
    limits = context.policy.budget.limits(DataTier.STANDARDISED)
    with context.engine.begin() as connection:  # the process dies after reserving
        reserve(connection=connection, query_id="c" * 32, tier="standardised", years=[2024],
                cost=PrivacyCost(epsilon=2.0), limits=limits)
    assert _spent(context) == {2024: 2.0}  # counted: never under-counted
    assert node.recover_reservations(engine=context.engine) == 0  # too recent to be a crash
    later = node.RESERVATION_TIMEOUT + timedelta(minutes=1)
    assert node.recover_reservations(engine=context.engine, now=utcnow() + later) == 1
    assert _spent(context) == {2024: 0.0}
    # a late settle of the voided reservation is refused: nothing can be released twice
    with pytest.raises(node.ReservationLostError), context.engine.begin() as connection:
        settle(connection=connection, query_id="c" * 32)


def test_tier_caps_hold_within_the_yearly_budget(make_node: NodeFactory) -> None:
    context = make_node()
    context.policy.budget.tiers[DataTier.BULK] = 1.0
    limits = context.policy.budget.limits(DataTier.BULK)
    with context.engine.begin() as connection:
        reserve(connection=connection, query_id="d" * 32, tier="bulk", years=[2024],
                cost=PrivacyCost(epsilon=0.75), limits=limits)
    with pytest.raises(node.BudgetExceededError) as caught, \
            context.engine.begin() as connection:
        reserve(connection=connection, query_id="e" * 32, tier="bulk", years=[2024],
                cost=PrivacyCost(epsilon=0.5), limits=limits)
    assert caught.value.remaining == {2024: 0.25}
    # the standardised tier still has the yearly budget minus the bulk spend
    node.answer_query(context=context, query=cobalt_query(epsilon=2.0))
    assert _spent(context) == {2024: 2.75}


def test_zcdp_spend_is_converted_at_the_policys_delta(make_node: NodeFactory) -> None:
    context = make_node(epsilon_per_year=1.0)
    limits = context.policy.budget.limits(DataTier.STANDARDISED)
    admitted = 0
    while True:
        try:
            with context.engine.begin() as connection:
                reserve(connection=connection, query_id=f"{admitted:032x}",
                        tier="standardised", years=[2024], cost=PrivacyCost(rho=0.001),
                        limits=limits)
        except node.BudgetExceededError as exc:
            assert "rho 0.001 (zCDP)" in str(exc)
            break
        admitted += 1
    # (1, 1e-6)-DP admits 24 releases of rho = 0.001: rho 0.024 converts to epsilon 0.992,
    # rho 0.025 to 1.014
    assert admitted == 24
    assert 0.9 < _spent(context)[2024] <= 1.0


def test_the_node_refuses_a_query_that_would_isolate_one_node(make_node: NodeFactory) -> None:
    context = make_node()
    insert_records(context, [make_record("a")])
    base = ("acme", "b", "c", "d")
    node.answer_query(context=context, query=cobalt_query(),
                      origin=ReleaseOrigin(participants=base))
    with pytest.raises(node.QueryRefusedError, match=r"differencing guard.*only by e") as caught:
        node.answer_query(context=context, query=cobalt_query(),
                          origin=ReleaseOrigin(participants=(*base, "e")))
    assert caught.value.rule == "differencing"
    assert _spent(context) == {2024: 1.0}  # the refusal charged nothing
    # the same set again, or one differing by 3 nodes, is fine
    node.answer_query(context=context, query=cobalt_query(),
                      origin=ReleaseOrigin(participants=base))
    node.answer_query(context=context, query=cobalt_query(),
                      origin=ReleaseOrigin(participants=(*base, "e", "f", "g")))
    assert _spent(context) == {2024: 3.0}


def test_the_running_service_gives_back_reservations_older_than_the_timeout(
        make_node: NodeFactory, caplog: pytest.LogCaptureFixture) -> None:
    context = make_node()
    context.settings.reservation_sweep_seconds = 0.05
    context.settings.reservation_timeout_seconds = 600.0
    limits = context.policy.budget.limits(DataTier.STANDARDISED)
    with caplog.at_level(logging.WARNING, logger="node.api"), TestClient(
            node.create_app(context, run_agent=False)):
        # after start-up (which gives back everything open): a stale and a fresh reservation
        with context.engine.begin() as connection:
            for query_id in ("a" * 32, "b" * 32):
                reserve(connection=connection, query_id=query_id, tier="standardised",
                        years=[2024], cost=PrivacyCost(epsilon=1.0), limits=limits)
            connection.execute(update(ReservationRow).where(
                ReservationRow.query_id == "a" * 32).values(  # type: ignore[arg-type]
                created_at=utcnow() - timedelta(seconds=601)))
        for _ in range(100):
            if _spent(context) == {2024: 1.0}:
                break
            time.sleep(0.05)
    assert _spent(context) == {2024: 1.0}  # the stale one given back, the fresh one kept
    assert "gave back 1 budget reservation(s) older than 600 s with no release" in caplog.text
    with context.engine.begin() as connection:
        settle(connection=connection, query_id="b" * 32)  # the fresh one still settles
    with pytest.raises(node.ReservationLostError), context.engine.begin() as connection:
        settle(connection=connection, query_id="a" * 32)
