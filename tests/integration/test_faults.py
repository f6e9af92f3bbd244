"""Faults with real processes on loopback: a node killed mid-job, the coordinator killed
mid-query. Whatever the moment of the kill, no budget is charged twice and the query ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

import node
from coordinator import CoordinatorContext, TokenRequest, init_coordinator
from crimmis_dpn._client import CoordinatorClient
from crimmis_dpn._processes import (
    ServiceProcess,
    free_port,
    start_service,
    stop_services,
    wait_healthy,
)
from node._db import ImportRow, RecordRow
from protocols import AggregateQuery, CoverageEntry, parse_period

pytestmark = pytest.mark.processes

COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"], flows=["production"],
                          countries=["COD", "ZMB"])]


def bulk_records(context: node.NodeContext, count: int) -> None:
    """``count`` monthly production records over 500 sites (enough work to kill mid-job)."""
    rows = []
    for i in range(count):
        period = parse_period(f"2024-{i % 12 + 1:02d}")
        first, last = period.month_index
        rows.append({"record_id": f"r{i}", "period": str(period), "year": 2024,
                     "first_month": first, "last_month": last, "commodity": "cobalt",
                     "stage": "mining", "flow": "production",
                     "country": "COD" if i % 3 else "ZMB", "quantity": 10.0, "unit": "t",
                     "basis": "contained", "quantity_t": 10.0,
                     "contribution_unit": f"site:{i % 500}"})
    with context.engine.begin() as conn:
        import_id = conn.execute(insert(ImportRow.__table__).values(  # type: ignore[attr-defined]
            file_name="bulk", sha256=uuid.uuid4().hex * 2, mapping_sha256="0" * 64,
            row_count=count)).inserted_primary_key[0]
        conn.execute(insert(RecordRow.__table__),  # type: ignore[attr-defined]
                     [{**r, "import_id": import_id} for r in rows])


def query() -> AggregateQuery:
    return AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country"], "epsilon": 0.5,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 1000.0}, "purpose": "fault test"})


def spent(home: Path) -> dict[int, float]:
    context = node.open_node(home)
    try:
        return {b.year: b.spent for b in node.budget_status(
            engine=context.engine, epsilon_per_year=context.policy.budget.epsilon_per_year)}
    finally:
        context.engine.dispose()


class Pool:
    """A coordinator process and node processes that can be killed and restarted."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.logs = home / "logs"
        self.logs.mkdir()
        self.hub: CoordinatorContext = init_coordinator(home=home / "coordinator",
                                                        port=free_port())
        self.hub.engine.dispose()
        self.services: dict[str, ServiceProcess] = {}
        self.node_homes: dict[str, Path] = {}
        self.start_coordinator()
        self.client = CoordinatorClient(self.services["coordinator"].url,
                                        self.hub.settings.operator_token.get_secret_value())

    def start_coordinator(self) -> None:
        service = start_service("coordinator", ["coordinator", "serve", "--home",
                                                str(self.hub.home)],
                                port=self.hub.settings.port, log_dir=self.logs)
        self.services["coordinator"] = service
        wait_healthy([service])

    def add_node(self, node_id: str, *, approval: str = "automatic", records: int = 12
                 ) -> None:
        policy = node.Policy(coverage=COVERAGE, approval=node.ApprovalPolicy(default=approval))
        context = node.init_node(home=self.home / node_id, node_id=node_id,
                                 display_name=node_id, port=free_port(), policy=policy)
        bulk_records(context, records)
        token = self.client.enrolment_token(TokenRequest(node_id=node_id))
        node.enrol(context=context, coordinator_url=self.client.url, token=token.token,
                   expected_coordinator_key_id=self.hub.key_id)
        context.engine.dispose()
        self.node_homes[node_id] = context.home
        self.start_node(node_id)

    def start_node(self, node_id: str) -> None:
        home = self.node_homes[node_id]
        port = node.load_settings(home).port
        service = start_service(node_id, ["node", "serve", "--home", str(home)], port=port,
                                log_dir=self.logs)
        self.services[node_id] = service
        wait_healthy([service])

    def kill(self, name: str) -> None:
        service = self.services[name]
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(timeout=10)
        service.log.close()

    def close(self) -> None:
        self.client.close()
        stop_services([s for s in self.services.values() if s.process.poll() is None])


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    monkeypatch.setenv("DPN_NODE_POLL_WAIT_SECONDS", "1")
    monkeypatch.setenv("DPN_NODE_MAX_BACKOFF_SECONDS", "2")
    created = Pool(tmp_path)
    try:
        yield created
    finally:
        created.close()


def wait_until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_a_node_killed_mid_job_finishes_after_restart_without_a_second_charge(
    pool: Pool,
) -> None:
    pool.add_node("miner-a", records=150_000)
    q = query()
    submitted = pool.client.query(q, quorum=1, deadline_seconds=120, wait_seconds=0)
    assert submitted.status in ("queued", "running")
    wait_until(lambda: pool.client.result(q.query_id).nodes[0].status != "pending"
               or "delivered" in (pool.client.result(q.query_id).nodes[0].message or ""))
    pool.kill("miner-a")  # somewhere between delivery and the report of the answer
    charged_at_kill = spent(pool.node_homes["miner-a"]).get(2024, 0.0)
    assert charged_at_kill in (0.0, 0.5)

    pool.start_node("miner-a")
    result = pool.client.result(q.query_id, wait_seconds=90)
    assert result.status == "completed", result.error
    assert [n.status for n in result.nodes] == ["answered"]
    assert spent(pool.node_homes["miner-a"]) == {2024: 0.5}  # charged exactly once


def test_the_coordinator_killed_mid_query_resumes_from_its_database(pool: Pool) -> None:
    pool.add_node("miner-a")
    pool.add_node("miner-b", approval="manual")
    q = query()
    pool.client.query(q, quorum=2, deadline_seconds=180, wait_seconds=0)
    wait_until(lambda: {n.node_id: n.message for n in pool.client.result(q.query_id).nodes}
               .get("miner-b", "") .startswith("job awaiting_approval")
               and pool.client.result(q.query_id).nodes[0].status == "answered")
    pool.kill("coordinator")

    node_b = pool.node_homes["miner-b"]
    status_command = [sys.executable, "-m", "crimmis_dpn", "node", "status", "--home",
                      str(node_b), "--json"]

    def disconnected() -> bool:
        out = subprocess.run(status_command, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["coordinator"]["connected"] is False

    wait_until(disconnected, timeout=30)
    link = json.loads(subprocess.run(status_command, capture_output=True, text=True,
                                     check=True).stdout)["coordinator"]
    assert link["last_error"].startswith(f"{pool.client.url}: ConnectError")

    job_id = json.loads(subprocess.run(
        [sys.executable, "-m", "crimmis_dpn", "node", "requests", "--home", str(node_b),
         "--json"], capture_output=True, text=True, check=True).stdout)[0]["job_id"]
    approved = subprocess.run(
        [sys.executable, "-m", "crimmis_dpn", "node", "approve", job_id, "--home", str(node_b),
         "--by", "test"], capture_output=True, text=True, check=False)
    assert approved.returncode == 0, approved.stderr

    pool.start_coordinator()
    result = pool.client.result(q.query_id, wait_seconds=90)
    assert result.status == "completed", result.error
    assert sorted(n.node_id for n in result.nodes if n.status == "answered") == [
        "miner-a", "miner-b"]
    assert spent(pool.node_homes["miner-a"]) == spent(node_b) == {2024: 0.5}
    log = pool.services["miner-b"].log_tail(20_000)
    assert f"cannot reach the coordinator at {pool.client.url}" in log
    assert "reconnected to the coordinator" in log
