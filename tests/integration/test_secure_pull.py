"""Secure aggregation over the real pull transport, in one process: the coordinator app and
four node agents (real agent, policy, budget, ledger code) over an in-process ASGI
transport, each message in a signed envelope."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

import node
from coordinator import (
    CoordinatorContext,
    SecureRounds,
    create_app,
    init_coordinator,
    issue_enrolment_token,
    tick_secure_rounds,
)
from coordinator._db import JobRow as CoordinatorJob
from coordinator._db import KeyRotationRow, NodeRow
from coordinator._receipts import node_receipts
from protocols import (
    COORDINATOR_ID,
    FIXED_POINT_SCALE,
    AggregateQuery,
    CoverageEntry,
    KeyRotation,
    MessageKind,
    RotateKeyBody,
    SecAggJob,
    SecAggPhase,
    SecAggStage,
    SecureAggregateQuery,
    decode_words,
    generate_private_key,
    public_key_b64,
    seal_envelope,
    sign,
    words_from_b64,
    words_to_b64,
)
from tests.unit.node.conftest import insert_records, make_record

URL = "http://coordinator.test"
COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"], flows=["production"],
                          countries=["COD", "ZMB"])]
#: Tonnes per record at node i: odd figures, so they can be searched for in what is stored.
TONNES = [517.0, 613.0, 709.0, 811.0]
SITES = 30  # records (sites) per node and country


@dataclass
class Pool:
    hub: CoordinatorContext
    app: Any
    nodes: list[node.NodeContext]

    @property
    def operator(self) -> dict[str, str]:
        return operator(self.hub)

    @property
    def rounds(self) -> SecureRounds:
        rounds: SecureRounds = self.app.state.secure_rounds
        return rounds

    def agent(self, context: node.NodeContext, cls: type[node.PullAgent] = node.PullAgent
              ) -> node.PullAgent:
        enrolment = node.load_enrolment(context.home)
        assert enrolment is not None
        return cls(context, enrolment, transport=httpx.ASGITransport(app=self.app))


def operator(hub: CoordinatorContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.settings.operator_token.get_secret_value()}"}


def per_node_cell(index: int) -> float:
    """Node ``index``'s exact sum in each of the two cells (COD, ZMB), in tonnes."""
    return SITES * TONNES[index]


def enrolled_pool(home: Path, *, port: int, prefix: str,
                  records: Callable[[int], list[dict[str, Any]]]) -> Iterator[Pool]:
    """A coordinator app and four pull-mode nodes ``{prefix}-0..3`` enrolled with it, node
    ``i`` holding ``records(i)``; closed when the generator resumes."""
    hub = init_coordinator(home=home / "coord", port=port)
    hub.settings.envelope_max_age_seconds = 300
    app = create_app(hub)
    nodes = []
    with TestClient(app, base_url=URL) as client:
        for index in range(4):
            context = node.init_node(home=home / f"n{index}", node_id=f"{prefix}-{index}",
                                     display_name=f"{prefix.title()} {index}",
                                     policy=node.Policy(coverage=COVERAGE))
            context.settings.poll_wait_seconds = 0.1
            insert_records(context, records(index))
            token, _ = issue_enrolment_token(context=hub, node_id=context.settings.node_id)
            node.enrol(context=context, coordinator_url=URL, token=token,
                       expected_coordinator_key_id=hub.key_id, client=client)
            nodes.append(context)
    yield Pool(hub, app, nodes)
    for context in nodes:
        context.engine.dispose()
    hub.engine.dispose()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    yield from enrolled_pool(tmp_path, port=8799, prefix="miner", records=node_records)


def node_records(index: int) -> list[dict[str, Any]]:
    return [make_record(f"r{index}-{country}-{site}", country=country, period="2024-03",
                        quantity_t=TONNES[index], unit=f"site:{index}-{country}-{site}")
            for country in ("COD", "ZMB") for site in range(SITES)]


def sum_query(**overrides: Any) -> AggregateQuery:
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country"], "epsilon": 1.0,
        "bounds": {"record_clip": 2000.0, "unit_sum_bound": 1000.0},
        "purpose": "secure aggregation test"}
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


class StopsAfterMasking(node.PullAgent):
    """A node that vanishes right after sending its masked input (a crash, a lost link)."""

    stop: asyncio.Event

    async def _secure_step(self, client: httpx.AsyncClient, job: SecAggJob) -> None:
        await super()._secure_step(client, job)
        if job.stage is SecAggStage.MASKED_INPUT and job.phase is SecAggPhase.SUM:
            self.stop.set()


async def _run(pool: Pool, body: dict[str, Any], *, dropper: int | None = None,
               timeout: float = 90.0) -> dict[str, Any]:
    """Start the agents, submit ``body`` to ``POST /v1/secure-queries``, wait for the end."""
    stops = [asyncio.Event() for _ in pool.nodes]
    agents = []
    for index, context in enumerate(pool.nodes):
        if index == dropper:
            agent = pool.agent(context, StopsAfterMasking)
            assert isinstance(agent, StopsAfterMasking)
            agent.stop = stops[index]
        else:
            agent = pool.agent(context)
        agents.append(agent)
    tasks = [asyncio.create_task(a.run(s)) for a, s in zip(agents, stops, strict=True)]
    transport = httpx.ASGITransport(app=pool.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=URL,
                                     headers=pool.operator) as http:
            response = await http.post("/v1/secure-queries", json=body)
            assert response.status_code == 200, response.text
            status = response.json()
            deadline = time.monotonic() + timeout
            while status["status"] == "running" and time.monotonic() < deadline:
                response = await http.get(f"/v1/secure-queries/{status['query_id']}",
                                          params={"wait_seconds": 1.0})
                assert response.status_code == 200, response.text
                status = response.json()
            return status
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)


def secure_body(query: AggregateQuery, **extra: Any) -> dict[str, Any]:
    return {"query": {"query": query.model_dump(mode="json")}, **extra}


def ledger_kinds(context: node.NodeContext) -> list[tuple[str, float]]:
    return [(e.kind, e.cost.rho) for e in node.ledger_entries(engine=context.engine)]


def test_a_secure_query_completes_with_the_pooled_sums(pool: Pool) -> None:
    query = sum_query()
    started = time.perf_counter()
    status = asyncio.run(_run(pool, secure_body(query)))
    secure_seconds = time.perf_counter() - started
    assert status["status"] == "completed", status
    assert status["sum_survivors"] == status["dominance_survivors"] == [
        f"miner-{i}" for i in range(4)]
    exact = sum(per_node_cell(i) for i in range(4))
    std = status["noise_std"]
    # sigma of one curator at epsilon 1, delta 1e-6 and B = 1000 t is 4.53 B; the round adds
    # sqrt(4/3) of it (noise calibrated for 3 of 4 survivors).
    assert 4.5 * 1000 * math.sqrt(4 / 3) < std < 4.7 * 1000 * math.sqrt(4 / 3)
    assert [c["key"] for c in status["cells"]] == [["COD"], ["ZMB"]]
    for cell in status["cells"]:
        assert cell["status"] == "published"
        assert abs(cell["value"] - exact) < 5 * std
        assert cell["std"] == pytest.approx(std)

    # Budget and ledger: one secure_aggregate release per node, charged in rho ...
    planned = pool.rounds.rounds[query.query_id].config.released_rho()
    assert status["rho"] == pytest.approx(planned)
    for context in pool.nodes:
        assert ledger_kinds(context) == [("secure_aggregate", pytest.approx(planned))]
        spend = node.budget_status(engine=context.engine,
                                   epsilon_per_year=context.policy.budget.epsilon_per_year,
                                   delta=context.policy.budget.delta)
        assert [b.year for b in spend] == [2024]
        assert 0.9 < spend[0].spent < 1.1  # rho converted at delta 1e-6: about epsilon 1
    # ... whose receipts the coordinator holds.
    receipts = node_receipts(engine=pool.hub.engine)
    assert sorted(r.node_id for r in receipts) == [f"miner-{i}" for i in range(4)]
    assert {r.query_id for r in receipts} == {query.query_id}
    assert all(r.cost.rho == pytest.approx(planned) for r in receipts)

    # The history holds the pooled result like any query's.
    with TestClient(pool.app, base_url=URL) as http:
        pooled = http.get(f"/v1/queries/{query.query_id}", headers=pool.operator).json()
        assert pooled["status"] == "completed"
        assert [c["value"] for c in pooled["cells"]] == [c["value"] for c in status["cells"]]

        # A plain (Laplace) query with the same agents, for the timing comparison.
        plain = sum_query()
        started = time.perf_counter()
        asyncio.run(_run_plain(pool, plain))
        plain_seconds = time.perf_counter() - started
    print(f"\nsecure query, 4 nodes: {secure_seconds:.2f} s; plain query: {plain_seconds:.2f} s")


async def _run_plain(pool: Pool, query: AggregateQuery) -> None:
    stops = [asyncio.Event() for _ in pool.nodes]
    tasks = [asyncio.create_task(pool.agent(c).run(s))
             for c, s in zip(pool.nodes, stops, strict=True)]
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pool.app),
                                     base_url=URL, headers=pool.operator) as http:
            response = await http.post("/v1/queries", json={
                "query": query.model_dump(mode="json"), "quorum": 4, "wait_seconds": 60})
            assert response.json()["status"] == "completed", response.text
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)


def test_the_coordinator_never_holds_a_nodes_unmasked_values(pool: Pool) -> None:
    query = sum_query()
    status = asyncio.run(_run(pool, secure_body(query)))
    assert status["status"] == "completed"
    secure = pool.rounds.rounds[query.query_id]
    config = secure.config
    # What it received from each node in phase sum: uniformly masked words, nowhere near the
    # node's values (the noise is a few thousand tonnes; masks are uniform on 2^64).
    for index in range(4):
        words = secure.state.masked[SecAggPhase.SUM][f"miner-{index}"]
        decoded = np.array(decode_words(words, modulus_bits=config.modulus_bits), dtype=float)
        exact = per_node_cell(index) * FIXED_POINT_SCALE
        assert np.all(np.abs(decoded[:2] - exact) > 1e9 * FIXED_POINT_SCALE)
        assert np.all(np.abs(decoded[2:] - 1) > 1e9)  # contributor flags are masked too
    # Nothing a node sent is stored per node in the database except its ledger receipt.
    with Session(pool.hub.engine) as session:
        assert session.exec(select(CoordinatorJob).where(
            CoordinatorJob.query_id == query.query_id)).all() == []
    dump = _dump(pool)
    for index in range(4):
        value = per_node_cell(index)
        for text in (f"{value:.1f}", str(int(value * FIXED_POINT_SCALE)), str(int(value))):
            assert text not in dump, (index, text)
    # The node's raw masked words are not stored either (they stay in memory).
    first = words_to_b64(secure.state.masked[SecAggPhase.SUM]["miner-0"],
                         modulus_bits=config.modulus_bits)
    assert first[:40] not in dump
    assert np.array_equal(words_from_b64(first, length=4, modulus_bits=config.modulus_bits),
                          secure.state.masked[SecAggPhase.SUM]["miner-0"])


def _dump(pool: Pool) -> str:
    url = pool.hub.engine.url
    assert url.database is not None
    with sqlite3.connect(url.database) as connection:
        return "\n".join(connection.iterdump())


def test_a_node_that_stops_after_masking_is_recovered(pool: Pool) -> None:
    query = sum_query()
    status = asyncio.run(_run(pool, secure_body(query, stage_seconds=3), dropper=3))
    assert status["status"] == "completed", status
    # Its masked input is in the sum: its self mask was rebuilt from the others' shares ...
    assert status["sum_survivors"] == [f"miner-{i}" for i in range(4)]
    assert status["dominance_survivors"] == ["miner-0", "miner-1", "miner-2"]
    dropped = {n["node_id"]: n for n in status["nodes"]}["miner-3"]
    assert dropped["step"] == "unmask/sum" and "dropped out" in dropped["message"]
    secure = pool.rounds.rounds[query.query_id]
    sums = secure.state.sums[SecAggPhase.SUM]
    exact = sum(per_node_cell(i) for i in range(4)) * FIXED_POINT_SCALE
    std = status["noise_std"] * FIXED_POINT_SCALE
    assert all(abs(total - exact) < 5 * std for total in sums[:2])
    assert sums[2:] == [4, 4]
    # ... but it could not take part in the dominance check: nothing is published.
    assert [(c["status"], c["reason"], c["value"]) for c in status["cells"]] == [
        ("suppressed", "dominance_unchecked", None)] * 2
    assert ledger_kinds(pool.nodes[3])[0][0] == "secure_aggregate"


def test_a_node_over_budget_refuses_cleanly_and_the_others_complete(pool: Pool) -> None:
    poor = pool.nodes[1]
    poor.policy.budget.epsilon_per_year = 0.5
    query = sum_query()
    status = asyncio.run(_run(pool, secure_body(query)))
    assert status["status"] == "completed", status
    views = {n["node_id"]: n for n in status["nodes"]}
    assert views["miner-1"]["status"] == "budget_exceeded"
    assert views["miner-1"]["step"] == "masked_input/sum"
    assert "remaining" in views["miner-1"]["message"]
    assert status["sum_survivors"] == ["miner-0", "miner-2", "miner-3"]
    exact = sum(per_node_cell(i) for i in (0, 2, 3))
    assert all(c["status"] == "published" and abs(c["value"] - exact) < 5 * status["noise_std"]
               for c in status["cells"])
    assert ledger_kinds(poor) == []
    assert [b.spent for b in node.budget_status(engine=poor.engine, epsilon_per_year=0.5,
                                                years=[2024])] == [0.0]
    assert [r.node_id for r in node_receipts(engine=pool.hub.engine)] == [
        "miner-0", "miner-2", "miner-3"]


def test_a_policy_refusal_at_the_start_leaves_the_node_out(pool: Pool) -> None:
    pool.nodes[2].policy.budget.max_epsilon_per_release = 0.5
    query = sum_query()
    status = asyncio.run(_run(pool, secure_body(query)))
    assert status["status"] == "completed", status
    views = {n["node_id"]: n for n in status["nodes"]}
    assert views["miner-2"]["status"] == "refused"
    assert views["miner-2"]["step"] == "advertise_keys"
    assert "exceeds this node's maximum per release" in views["miner-2"]["message"]
    assert status["sum_survivors"] == ["miner-0", "miner-1", "miner-3"]


def test_a_coordinator_restart_fails_the_round_and_says_so(pool: Pool) -> None:
    query = sum_query()
    with TestClient(pool.app, base_url=URL) as http:
        started = http.post("/v1/secure-queries", headers=pool.operator,
                            json=secure_body(query)).json()
        assert started["status"] == "running" and started["step"] == "advertise_keys"
    restarted = create_app(pool.hub)  # a new process: no round in memory
    with TestClient(restarted, base_url=URL) as http:
        status = http.get(f"/v1/secure-queries/{query.query_id}", headers=pool.operator).json()
        assert status["status"] == "failed"
        assert "coordinator restarted" in status["error"]
        history = http.get(f"/v1/queries/{query.query_id}", headers=pool.operator).json()
        assert history["status"] == "failed" and "restarted" in history["error"]
        again = http.post("/v1/secure-queries", headers=pool.operator, json=secure_body(query))
        assert again.status_code == 409 and "fresh query id" in again.json()["message"]


def test_secure_queries_need_the_operator_and_three_nodes(pool: Pool, tmp_path: Path) -> None:
    with TestClient(pool.app, base_url=URL) as http:
        auditor = {"Authorization": "Bearer " + pool.hub.settings.auditor_token
                   .get_secret_value()}
        refused = http.post("/v1/secure-queries", headers=auditor,
                            json=secure_body(sum_query()))
        assert refused.status_code == 403
        mean = sum_query(kind="mean")
        invalid = http.post("/v1/secure-queries", headers=pool.operator, json=secure_body(mean))
        assert invalid.status_code == 422
    hub = init_coordinator(home=tmp_path / "lonely", port=8798)
    with TestClient(create_app(hub), base_url=URL) as http:
        response = http.post("/v1/secure-queries", headers=operator(hub),
                             json=secure_body(sum_query()))
        assert response.status_code == 409
        assert "at least 3 active pull-mode nodes" in response.json()["message"]
    hub.engine.dispose()


def test_deadlines_drop_silent_nodes(pool: Pool) -> None:
    """Without any node answering, the first step's deadline fails the round cleanly."""
    query = sum_query()
    with TestClient(pool.app, base_url=URL) as http:
        http.post("/v1/secure-queries", headers=pool.operator,
                  json=secure_body(query, stage_seconds=0.5))
    time.sleep(0.6)
    tick_secure_rounds(pool.rounds)
    secure = pool.rounds.rounds[query.query_id]
    assert secure.status == "failed"
    assert "advertise_keys" in (secure.error or "") and "needs 3" in (secure.error or "")


@pytest.mark.processes
def test_the_cli_runs_a_secure_query_over_a_pool_of_processes(tmp_path: Path) -> None:
    """Real processes on loopback: `dpn coordinator serve`, four `dpn node serve`, and
    `dpn coordinator secure-query` (then a plain query, for the timing comparison)."""
    import json
    import subprocess
    import sys

    from coordinator import TokenRequest
    from crimmis_dpn._client import CoordinatorClient
    from crimmis_dpn._processes import free_port, running, start_service

    logs = tmp_path / "logs"
    logs.mkdir()
    hub = init_coordinator(home=tmp_path / "coordinator", port=free_port())
    hub.engine.dispose()
    coordinator = start_service("coordinator", ["coordinator", "serve", "--home",
                                                str(hub.home)],
                                port=hub.settings.port, log_dir=logs)
    token = hub.settings.operator_token.get_secret_value()
    with running([coordinator]), CoordinatorClient(coordinator.url, token) as client:
        contexts = []
        for index in range(4):
            context = node.init_node(home=tmp_path / f"n{index}", node_id=f"miner-{index}",
                                     display_name=f"Miner {index}", port=free_port(),
                                     policy=node.Policy(coverage=COVERAGE))
            insert_records(context, node_records(index))
            issued = client.enrolment_token(TokenRequest(node_id=context.settings.node_id))
            node.enrol(context=context, coordinator_url=coordinator.url, token=issued.token,
                       expected_coordinator_key_id=hub.key_id)
            context.engine.dispose()
            contexts.append(context)
        services = [start_service(c.settings.node_id, ["node", "serve", "--home", str(c.home)],
                                  port=c.settings.port, log_dir=logs) for c in contexts]
        with running(services):
            query = sum_query()
            query_file = tmp_path / "secure.json"
            query_file.write_text(json.dumps(secure_body(query)["query"]))
            output = tmp_path / "result.json"
            started = time.perf_counter()
            completed = subprocess.run(
                [sys.executable, "-m", "crimmis_dpn", "coordinator", "secure-query",
                 str(query_file), "--url", coordinator.url, "--token", token,
                 "--output", str(output), "--json"],
                capture_output=True, text=True, timeout=180, check=False)
            secure_seconds = time.perf_counter() - started
            assert completed.returncode == 0, completed.stderr + coordinator.log_tail()
            status = json.loads(output.read_text())
            assert status["status"] == "completed"
            assert status["sum_survivors"] == [f"miner-{i}" for i in range(4)]
            exact = sum(per_node_cell(i) for i in range(4))
            assert all(c["status"] == "published"
                       and abs(c["value"] - exact) < 5 * status["noise_std"]
                       for c in status["cells"])
            assert {r.node_id for r in client.receipts()} == {f"miner-{i}" for i in range(4)}
            started = time.perf_counter()
            again = client.secure_query(SecureAggregateQuery(query=sum_query()),
                                        wait_seconds=60)
            client_seconds = time.perf_counter() - started
            assert again.status == "completed", again.error
            started = time.perf_counter()
            plain = client.query(sum_query(), quorum=4, deadline_seconds=60, wait_seconds=60)
            plain_seconds = time.perf_counter() - started
            assert plain.status == "completed"
    for context in contexts:
        reopened = node.open_node(context.home)
        try:
            assert ledger_kinds(reopened)[0][0] == "secure_aggregate"
        finally:
            reopened.engine.dispose()
    print(f"\nprocesses: secure query by the CLI (incl. its start-up) {secure_seconds:.2f} s, "
          f"by the client {client_seconds:.2f} s; plain query {plain_seconds:.2f} s")


def test_a_rotated_key_is_followed_by_its_signed_rotation_and_a_forged_one_refused(
        pool: Pool) -> None:
    first = asyncio.run(_run(pool, secure_body(sum_query())))
    assert first["status"] == "completed", first
    peer = pool.nodes[1]
    old_key = node.pinned_peer_keys(home=peer.home)["miner-0"]
    assert old_key.source == "first_use"
    # miner-0 rotates its key: the coordinator keeps the envelope signed by the old key and
    # hands it to the peers with the next round, which they check and follow.
    with TestClient(pool.app, base_url=URL) as client:
        node.rotate_key(context=pool.nodes[0], client=client)
    second = asyncio.run(_run(pool, secure_body(sum_query())))
    assert second["status"] == "completed", second
    assert second["sum_survivors"] == [f"miner-{i}" for i in range(4)]
    pinned = node.pinned_peer_keys(home=peer.home)["miner-0"]
    assert (pinned.public_key, pinned.source) == (pool.nodes[0].public_key, "rotation")
    # A coordinator that swaps miner-0's key for one of its own, with a "rotation" it signed
    # itself, is refused by every peer: the round fails and nothing is released.
    forged_key = generate_private_key()
    forged = KeyRotation(old_public_key=pool.nodes[0].public_key, rotation=seal_envelope(
        forged_key, sender="miner-0", recipient=COORDINATOR_ID, kind=MessageKind.ROTATE_KEY,
        body=RotateKeyBody(new_public_key=public_key_b64(forged_key), proof=sign(
            forged_key, {"node_id": "miner-0", "new_public_key": public_key_b64(forged_key)})
        ).model_dump(mode="json")))
    with Session(pool.hub.engine) as session:
        session.add(KeyRotationRow(node_id="miner-0", old_public_key=forged.old_public_key,
                                   new_public_key=public_key_b64(forged_key),
                                   rotation_json=forged.model_dump_json()))
        row = session.get(NodeRow, "miner-0")
        assert row is not None
        row.public_key = public_key_b64(forged_key)
        session.add(row)
        session.commit()
    spent_before = [ledger_kinds(c) for c in pool.nodes[1:]]
    third = asyncio.run(_run(pool, secure_body(sum_query())))
    assert third["status"] == "failed", third
    refusals = {o["node_id"]: o["message"] for o in third["nodes"] if o["message"]}
    for index in (1, 2, 3):
        assert "identity key of a peer differs" in refusals[f"miner-{index}"], refusals
    assert [ledger_kinds(c) for c in pool.nodes[1:]] == spent_before
