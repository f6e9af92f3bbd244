"""The pull protocol in one process: real node code (agent, jobs, policy, budget) against the
real coordinator app, over an in-process ASGI transport (no sockets)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

import node
import node._jobs
from coordinator import (
    CoordinatorContext,
    NodeStatus,
    PooledSynthetic,
    create_app,
    finalize_query,
    init_coordinator,
    issue_enrolment_token,
    query_result,
    submit_query,
    synthetic_balance,
)
from coordinator._db import JobRow as CoordinatorJob
from node._db import JobRow as NodeJob
from protocols import (
    SYNTHETIC_COLUMNS,
    AggregateQuery,
    CoverageEntry,
    DataTier,
    JobState,
    SyntheticQuery,
)
from tests.unit.node.conftest import cobalt_query, insert_records, make_record

URL = "http://coordinator.test"
COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"],
                          flows=["production", "export"], countries=["COD", "ZMB"])]


@dataclass
class Pool:
    hub: CoordinatorContext
    app: Any
    nodes: list[node.NodeContext]

    def agent(self, context: node.NodeContext,
              transport: httpx.AsyncBaseTransport | None = None) -> node.PullAgent:
        enrolment = node.load_enrolment(context.home)
        assert enrolment is not None
        return node.PullAgent(context, enrolment,
                              transport=transport or httpx.ASGITransport(app=self.app))

    def step(self, context: node.NodeContext) -> Any:
        async def one() -> Any:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app)) as client:
                return await self.agent(context).step(client)
        return asyncio.run(one())

    def submit(self, query: AggregateQuery, quorum: int) -> None:
        submit_query(engine=self.hub.engine, query=query, quorum=quorum, deadline_seconds=60)

    def coordinator_jobs(self, query_id: str) -> dict[str, CoordinatorJob]:
        with Session(self.hub.engine) as session:
            from sqlmodel import select
            rows = session.exec(select(CoordinatorJob).where(
                CoordinatorJob.query_id == query_id)).all()
            return {r.node_id: r for r in rows}


def spent(context: node.NodeContext) -> dict[int, float]:
    return {b.year: b.spent for b in node.budget_status(
        engine=context.engine, epsilon_per_year=context.policy.budget.epsilon_per_year)}


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    hub = init_coordinator(home=tmp_path / "coord", port=8799)
    hub.settings.envelope_max_age_seconds = 300
    app = create_app(hub)
    nodes = []
    with TestClient(app, base_url=URL) as client:
        for index, approval in enumerate(["automatic", "automatic", "manual"]):
            policy = node.Policy(coverage=COVERAGE,
                                 approval=node.ApprovalPolicy(default=approval))
            context = node.init_node(home=tmp_path / f"n{index}", node_id=f"miner-{index}",
                                     display_name=f"Miner {index}", policy=policy)
            context.settings.poll_wait_seconds = 0.1
            insert_records(context, [make_record(f"r{index}", quantity_t=100.0 * (index + 1),
                                                 unit=f"site:{index}")])
            token, _ = issue_enrolment_token(context=hub, node_id=context.settings.node_id)
            node.enrol(context=context, coordinator_url=URL, token=token,
                       expected_coordinator_key_id=hub.key_id, client=client)
            nodes.append(context)
    yield Pool(hub, app, nodes)
    for context in nodes:
        context.engine.dispose()
    hub.engine.dispose()


def test_enrolment_pins_the_coordinator_key(pool: Pool) -> None:
    enrolment = node.load_enrolment(pool.nodes[0].home)
    assert enrolment is not None
    assert enrolment.coordinator_key_id == pool.hub.key_id
    assert oct((pool.nodes[0].home / "enrolment.json").stat().st_mode & 0o777) == "0o600"


def test_enrolment_refuses_an_unexpected_coordinator_key(pool: Pool, tmp_path: Path) -> None:
    context = node.init_node(home=tmp_path / "late", node_id="late", display_name="Late")
    token, _ = issue_enrolment_token(context=pool.hub, node_id="late")
    with TestClient(pool.app, base_url=URL) as client, pytest.raises(
            node.EnrolmentRefusedError, match="expected 0000000000000000"):
        node.enrol(context=context, coordinator_url=URL, token=token,
                   expected_coordinator_key_id="0" * 16, client=client)
    assert node.load_enrolment(context.home) is None
    context.engine.dispose()


def test_automatic_nodes_answer_and_the_query_completes(pool: Pool) -> None:
    query = cobalt_query(flows=["production"], group_by=["country"])
    pool.submit(query, quorum=2)
    for context in pool.nodes[:2]:
        job = pool.step(context)
        assert job is not None and job.query == query
    jobs = pool.coordinator_jobs(query.query_id)
    assert jobs["miner-0"].state == jobs["miner-1"].state == JobState.ANSWERED
    assert jobs["miner-2"].state == JobState.QUEUED
    assert [spent(c) for c in pool.nodes[:2]] == [{2024: 1.0}, {2024: 1.0}]


def test_manual_approval_holds_the_job_until_a_person_approves(pool: Pool) -> None:
    owner = pool.nodes[2]
    query = cobalt_query(flows=["production"], group_by=["country"])
    pool.submit(query, quorum=1)
    pool.step(owner)
    held = node.list_jobs(engine=owner.engine, states=[JobState.AWAITING_APPROVAL])
    assert [(j.purpose, j.epsilon, j.years) for j in held] == [("unit test", 1.0, "2024")]
    assert pool.coordinator_jobs(query.query_id)["miner-2"].state == JobState.AWAITING_APPROVAL
    assert spent(owner) == {}

    node.approve_job(engine=owner.engine, job_id=held[0].job_id, by="J. Smith")
    pool.step(owner)
    assert pool.coordinator_jobs(query.query_id)["miner-2"].state == JobState.ANSWERED
    assert spent(owner) == {2024: 1.0}
    with pytest.raises(node.JobNotFoundError, match="not awaiting approval"):
        node.approve_job(engine=owner.engine, job_id=held[0].job_id, by="J. Smith")


def test_a_denied_job_is_refused_with_the_owners_reason(pool: Pool) -> None:
    owner = pool.nodes[2]
    query = cobalt_query(flows=["production"], group_by=["country"])
    pool.submit(query, quorum=1)
    pool.step(owner)
    job_id = node.list_jobs(engine=owner.engine)[0].job_id
    node.deny_job(engine=owner.engine, job_id=job_id, by="J. Smith", reason="not our purpose")
    pool.step(owner)
    finalize_query(engine=pool.hub.engine, query_id=query.query_id)
    outcome = {o.node_id: o for o in query_result(engine=pool.hub.engine,
                                                  query_id=query.query_id).nodes}
    assert outcome["miner-2"].status is NodeStatus.REFUSED
    assert outcome["miner-2"].message == "denied by the node owner: not our purpose"


def test_policy_refusal_and_budget_refusal_reach_the_coordinator(pool: Pool) -> None:
    first = pool.nodes[0]
    too_costly = cobalt_query(flows=["production"], group_by=["country"], epsilon=5.0)
    pool.submit(too_costly, quorum=1)
    pool.step(first)
    job = pool.coordinator_jobs(too_costly.query_id)["miner-0"]
    assert (job.state, job.refusal_reason) == (JobState.REFUSED, "query_refused")
    assert "exceeds this node's maximum per release" in (job.message or "")

    first.policy.budget.epsilon_per_year = 1.5
    for _ in range(2):
        query = cobalt_query(flows=["production"], group_by=["country"])
        pool.submit(query, quorum=1)
        pool.step(first)
    job = pool.coordinator_jobs(query.query_id)["miner-0"]
    assert (job.state, job.refusal_reason) == (JobState.REFUSED, "budget_exceeded")
    assert "requested epsilon 1 per year, but 2024: 0.5 remaining" in (job.message or "")
    assert spent(first) == {2024: 1.0}


def test_a_crash_before_reporting_is_recovered_without_a_second_charge(pool: Pool) -> None:
    first = pool.nodes[0]
    query = cobalt_query(flows=["production"], group_by=["country"])
    pool.submit(query, quorum=1)

    async def crash_after_answering() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pool.app)) as client:
            agent = pool.agent(first)
            job = await agent._poll(client)
            assert job is not None
            node.receive_job(context=first, spec=job)
            node.run_job(context=first, job_id=job.job_id)  # answered, never reported

    asyncio.run(crash_after_answering())
    assert pool.coordinator_jobs(query.query_id)["miner-0"].state == JobState.DELIVERED
    pool.step(first)  # a fresh agent after the restart reports the stored answer
    assert pool.coordinator_jobs(query.query_id)["miner-0"].state == JobState.ANSWERED
    assert spent(first) == {2024: 1.0}
    with Session(first.engine) as session:
        rows = session.get(NodeJob, pool.coordinator_jobs(query.query_id)["miner-0"].job_id)
        assert rows is not None and rows.reported_state == JobState.ANSWERED


def test_a_full_disk_keeps_the_agent_alive_and_the_job_is_answered_once_there_is_room(
    pool: Pool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = pool.nodes[0]
    first.settings.max_backoff_seconds = 0.2
    query = cobalt_query(flows=["production"], group_by=["country"])
    pool.submit(query, quorum=1)
    real_answer = node._jobs.answer_query
    attempts: list[str] = []

    def full_disk_twice(**kwargs: Any) -> Any:
        attempts.append(kwargs["query"].query_id)
        if len(attempts) <= 2:  # what SQLite raises when the settlement finds no room
            raise OperationalError("INSERT INTO ledger_entries", {},
                                   sqlite3.OperationalError("database or disk is full"))
        return real_answer(**kwargs)

    monkeypatch.setattr(node._jobs, "answer_query", full_disk_twice)

    async def run_until_answered() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(pool.agent(first).run(stop))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if task.done() or pool.coordinator_jobs(query.query_id)["miner-0"].state \
                    == JobState.ANSWERED:
                break
        stop.set()
        await task  # the agent did not die on the full disk

    with caplog.at_level(logging.INFO, logger="node.agent"):
        asyncio.run(run_until_answered())
    assert attempts == [query.query_id] * 3
    assert "the node's database could not be written: the disk is full; no job can be " \
           "answered until there is room" in caplog.text
    assert "failed at this node" not in caplog.text  # not given up: retried
    assert pool.coordinator_jobs(query.query_id)["miner-0"].state == JobState.ANSWERED
    assert spent(first) == {2024: 1.0}


def test_an_unreachable_coordinator_is_named_backed_off_and_reconnected(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    first = pool.nodes[0]
    first.settings.max_backoff_seconds = 1.0

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def run_briefly(agent: node.PullAgent) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(2.5)
        stop.set()
        await task

    with caplog.at_level(logging.INFO, logger="node.agent"):
        down = pool.agent(first, transport=httpx.MockTransport(refuse))
        asyncio.run(run_briefly(down))
        status = node.agent_status(engine=first.engine)
        assert status is not None and not status.connected
        assert status.consecutive_failures >= 2
        assert status.last_error == f"{URL}: ConnectError: connection refused"
        assert f"cannot reach the coordinator at {URL}: ConnectError" in caplog.text
        assert "retrying in" in caplog.text

        down.failures = status.consecutive_failures  # the same agent, once the link is back
        async def recover() -> None:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pool.app)) as c:
                await down.step(c)
        asyncio.run(recover())
    status = node.agent_status(engine=first.engine)
    assert status is not None and status.connected and status.consecutive_failures == 0
    assert f"reconnected to the coordinator at {URL}" in caplog.text


def test_a_forged_job_is_refused_by_the_node(pool: Pool, caplog: pytest.LogCaptureFixture
                                             ) -> None:
    from protocols import COORDINATOR_ID, MessageKind, generate_private_key, seal_envelope

    first = pool.nodes[0]
    forged = seal_envelope(generate_private_key(), sender=COORDINATOR_ID,
                           recipient=first.settings.node_id, kind=MessageKind.JOB, body={})

    def answer_with_forgery(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=forged.model_dump(mode="json"))

    async def poll_once() -> None:
        agent = pool.agent(first)
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer_with_forgery)) as c:
            await agent._poll(c)

    with caplog.at_level(logging.WARNING, logger="node.agent"), pytest.raises(
            node.CoordinatorError, match="not signed by its registered key"):
        asyncio.run(poll_once())
    assert "refused a message from the coordinator" in caplog.text
    assert node.list_jobs(engine=first.engine) == []


def _synthetic_query(**overrides: Any) -> SyntheticQuery:
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "commodities": ["cobalt"],
        "periods": [f"2024-{m:02d}" for m in range(1, 13)], "epsilon": 1.0, "rows": 400,
        "quantity_max_t": 1000.0, "purpose": "synthetic pool"}
    fields.update(overrides)
    return SyntheticQuery.model_validate(fields)


def _many_records(context: node.NodeContext, index: int) -> None:
    insert_records(context, [
        make_record(f"s{index}-{site}-{month}", period=f"2024-{month:02d}",
                    quantity_t=50.0 + 10 * site + index, unit=f"site:{index}-{site}",
                    country="COD" if site % 2 else "ZMB")
        for site in range(8) for month in range(1, 13)])


def test_synthetic_tables_are_released_charged_and_pooled(pool: Pool) -> None:
    for index, context in enumerate(pool.nodes):
        _many_records(context, index)
        context.policy.release.synthetic_tiers = [DataTier.BULK]
    pool.nodes[2].policy.approval.default = "automatic"
    query = _synthetic_query()
    submit_query(engine=pool.hub.engine, query=query, quorum=3, deadline_seconds=60,
                 tier=DataTier.BULK)
    for context in pool.nodes:
        assert pool.step(context) is not None
    pooled = query_result(engine=pool.hub.engine, query_id=query.query_id)
    assert isinstance(pooled, PooledSynthetic)
    assert pooled.status == "completed", pooled.error
    assert len(pooled.rows) == 3 * 400
    assert pooled.columns == [*SYNTHETIC_COLUMNS, "weight"]
    assert pooled.epsilon_by_node == {"miner-0": 1.0, "miner-1": 1.0, "miner-2": 1.0}
    assert set(pooled.evaluation_by_node["miner-0"]) == {"quality", "privacy_risk"}
    assert [spent(c) for c in pool.nodes] == [{2024: 1.0}] * 3
    weights = {round(r[-1], 6) for r in pooled.rows}
    assert all(w > 0 for w in weights)

    cells = synthetic_balance(pooled, commodity="cobalt", year=2024)
    production = {c.country: c for c in cells if c.flow == "production"}
    assert set(production) <= {"COD", "ZMB"} and production
    # Synthetic quantities are random, so test what holds for every draw: rows stay in the
    # query's bounds, and each cell is the weighted sum of its rows (at most weight x bound).
    column = {name: i for i, name in enumerate(pooled.columns)}
    assert all(0 <= r[column["quantity_t"]] <= query.quantity_max_t
               for r in pooled.rows if r[column["quantity_t"]] is not None)
    for country, cell in production.items():
        rows = [r for r in pooled.rows if r[column["country"]] == country
                and r[column["stage"]] == cell.stage and r[column["flow"]] == "production"
                and r[column["quantity_t"]] is not None]
        assert cell.status == "published" and cell.synthetic is not None
        assert cell.synthetic == pytest.approx(
            sum(r[column["quantity_t"]] * r[column["weight"]] for r in rows))
        assert 0 < cell.synthetic <= sum(query.quantity_max_t * r[column["weight"]] for r in rows)


def test_a_node_that_has_not_opted_in_refuses_synthetic_jobs(pool: Pool) -> None:
    first = pool.nodes[0]
    query = _synthetic_query()
    submit_query(engine=pool.hub.engine, query=query, quorum=1, deadline_seconds=60,
                 tier=DataTier.BULK)
    pool.step(first)
    job = pool.coordinator_jobs(query.query_id)["miner-0"]
    assert (job.state, job.refusal_reason) == (JobState.REFUSED, "query_refused")
    assert "does not release synthetic data for tier bulk" in (job.message or "")
    assert spent(first) == {}


def test_key_rotation_replaces_the_key_on_both_sides(pool: Pool) -> None:
    first = pool.nodes[0]
    old_key_id = first.key_id
    with TestClient(pool.app, base_url=URL) as client:
        new_key_id = node.rotate_key(context=first, client=client)
    assert new_key_id != old_key_id and first.key_id == new_key_id
    assert node.open_node(first.home).key_id == new_key_id  # the key file was replaced
    assert not (first.home / "node_key.pem.new").exists()
    query = cobalt_query(flows=["production"], group_by=["country"])
    pool.submit(query, quorum=1)
    assert pool.step(first) is not None  # polls and results verify against the new key
    assert pool.coordinator_jobs(query.query_id)["miner-0"].state == JobState.ANSWERED
