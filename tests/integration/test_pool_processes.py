"""A real pool on loopback: a coordinator and four pull-mode nodes, each its own process.

The nodes connect out to the coordinator (they enrol with one-time tokens and long-poll for
jobs); the coordinator never connects to a node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import node
from coordinator import (
    CellStatus,
    NodeStatus,
    PooledResult,
    TokenRequest,
    init_coordinator,
    is_eu_sourcing,
)
from crimmis_dpn._client import CoordinatorClient
from crimmis_dpn._processes import ServiceProcess, free_port, running, start_service
from protocols import AggregateQuery, CoverageEntry
from tests.unit.node.conftest import insert_records, make_record

pytestmark = pytest.mark.processes

COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"],
                          flows=["production", "export", "stock_level"], countries=["COD"])]


@dataclass
class Pool:
    coordinator: ServiceProcess
    nodes: dict[str, ServiceProcess]
    client: CoordinatorClient
    home: Path


def _node_records(index: int) -> list[dict[str, object]]:
    rows = []
    for month in range(1, 13):
        rows.append(make_record(f"p{index}-{month}", period=f"2024-{month:02d}",
                                quantity_t=100.0 * (index + 1), unit=f"site:{index}"))
        rows.append(make_record(f"e{index}-{month}", period=f"2024-{month:02d}", flow="export",
                                partner="CHN", quantity_t=50.0, unit=f"site:{index}"))
    rows.append(make_record(f"s{index}-23", period="2023-12", flow="stock_level",
                            quantity_t=200.0, unit=f"site:{index}"))
    rows.append(make_record(f"s{index}-24", period="2024-12", flow="stock_level",
                            quantity_t=260.0, unit=f"site:{index}"))
    return rows


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    home = tmp_path_factory.mktemp("pool")
    logs = home / "logs"
    logs.mkdir()
    hub = init_coordinator(home=home / "coordinator", port=free_port())
    hub.engine.dispose()
    coordinator = start_service("coordinator", ["coordinator", "serve", "--home",
                                                str(hub.home)],
                                port=hub.settings.port, log_dir=logs)
    with running([coordinator]):
        client = CoordinatorClient(coordinator.url,
                                   hub.settings.operator_token.get_secret_value())
        contexts = []
        for index in range(4):
            context = node.init_node(
                home=home / f"n{index}", node_id=f"miner-{index}",
                display_name=f"Miner {index}", port=free_port(),
                policy=node.Policy(coverage=COVERAGE))
            insert_records(context, _node_records(index))
            token = client.enrolment_token(TokenRequest(node_id=context.settings.node_id))
            node.enrol(context=context, coordinator_url=coordinator.url, token=token.token,
                       expected_coordinator_key_id=hub.key_id)
            context.engine.dispose()
            contexts.append(context)
        nodes = {c.settings.node_id: start_service(c.settings.node_id,
                                                   ["node", "serve", "--home", str(c.home)],
                                                   port=c.settings.port, log_dir=logs)
                 for c in contexts}
        with running(list(nodes.values())):
            yield Pool(coordinator, nodes, client, home)
        client.close()


def query(**overrides: object) -> AggregateQuery:
    fields: dict[str, object] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country"], "epsilon": 0.1,
        "bounds": {"record_clip": 5000.0, "unit_sum_bound": 5000.0}, "purpose": "integration",
    }
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


def test_nodes_are_enrolled_in_pull_mode_and_seen_recently(pool: Pool) -> None:
    views = pool.client.nodes()
    assert [v.node_id for v in views] == ["miner-0", "miner-1", "miner-2", "miner-3"]
    assert all(v.transport == "pull" and v.url is None for v in views)
    assert all(v.last_seen_at is not None for v in views)


def test_a_pooled_query_over_http_publishes_cells_with_three_or_more_companies(pool: Pool
                                                                            ) -> None:
    result = pool.client.query(query(), quorum=4, deadline_seconds=60)
    assert result.status == "completed", result.error
    assert sorted(result.answered) == ["miner-0", "miner-1", "miner-2", "miner-3"]
    cod, zmb = result.cells
    assert cod.status is CellStatus.PUBLISHED and cod.value is not None
    # exact total 12 * (100 + 200 + 300 + 400) = 12,000 t; noise scale 5000 / 0.1 per node.
    # The sum of 4 Laplace(b) exceeds 3.5 x its 95% half-width with probability 5.5e-7
    # (2 x, as before, was exceeded in 7e-4 of runs).
    assert cod.ci95 is not None and abs(cod.value - 12_000.0) < cod.ci95 * 3.5
    assert zmb.status is CellStatus.NOT_COVERED
    again = pool.client.query(result.query)  # idempotent: the stored result, no new release
    assert again.cells == result.cells
    assert len(pool.client.history()) >= 1


def test_the_balance_cli_prints_json_that_satisfies_the_identity(pool: Pool) -> None:
    output = pool.home / "balance.json"
    token = pool.client._client.headers["authorization"].removeprefix("Bearer ")
    completed = subprocess.run(
        [sys.executable, "-m", "crimmis_dpn", "coordinator", "balance", "--commodity", "cobalt",
         "--period", "2024", "--epsilon", "0.3", "--url", pool.coordinator.url,
         "--token", token, "--output", str(output), "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    balance = json.loads(output.read_text())
    assert balance["commodity"] == "cobalt" and balance["period"] == "2024"
    assert len(balance["query_ids"]) == 2  # countries and stocks (default: no totals)
    assert balance["totals"] == []
    rows = {(r["country"], r["stage"]): r for r in balance["rows"]}
    assert set(rows) == {("COD", "mining")}
    row = rows[("COD", "mining")]
    figures = {name: row[name]["value"] for name in (
        "production", "exports", "opening_stock", "closing_stock", "stock_change",
        "apparent_consumption")}
    assert all(row[name]["status"] == "published" for name in figures)
    assert row["imports"]["status"] == "not_covered"
    assert figures["stock_change"] == pytest.approx(
        figures["closing_stock"] - figures["opening_stock"])
    assert figures["apparent_consumption"] == pytest.approx(
        figures["production"] - figures["exports"] - figures["stock_change"])
    assert balance["epsilon_by_node"]["miner-0"] == pytest.approx({"2024": 0.3, "2023": 0.1})


def test_the_balance_cli_asks_for_world_totals_and_prices_and_prints_them(pool: Pool) -> None:
    output = pool.home / "balance-totals.json"
    token = pool.client._client.headers["authorization"].removeprefix("Bearer ")
    completed = subprocess.run(
        [sys.executable, "-m", "crimmis_dpn", "coordinator", "balance", "--commodity", "cobalt",
         "--period", "2024", "--epsilon", "0.3", "--totals", "world", "--price-epsilon", "0.1",
         "--purpose", "annual cobalt review", "--url", pool.coordinator.url, "--token", token,
         "--output", str(output)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "200"})
    assert completed.returncode == 0, completed.stderr
    balance = json.loads(output.read_text())
    # countries, stocks, world totals, and the prices' value and priced-tonnes queries
    assert len(balance["query_ids"]) == 5
    world = {(t["stage"], t["figure"]): t["value"] for t in balance["totals"]
             if t["level"] == "world"}
    assert world[("mining", "production")]["status"] == "published"
    assert {p["contract_type"] for p in balance["prices"]} >= {"all"}
    assert all(p["status"] != "published" for p in balance["prices"])  # no prices were reported
    text = " ".join(completed.stdout.split())  # the console wraps long titles
    assert "measured totals" in text and "World" in text
    assert "volume-weighted average prices" in text
    # 0.3 on flows, stocks and totals, 0.1 on prices: 0.4 in 2024 (stocks also charge 2023)
    assert balance["epsilon_by_node"]["miner-0"]["2024"] == pytest.approx(0.4)


def test_the_eu_sourcing_cli_pools_imports_by_partner_for_the_report(pool: Pool) -> None:
    output = pool.home / "sourcing.json"
    token = pool.client._client.headers["authorization"].removeprefix("Bearer ")
    completed = subprocess.run(
        [sys.executable, "-m", "crimmis_dpn", "coordinator", "eu-sourcing", "--commodity",
         "cobalt", "--period", "2024", "--epsilon", "0.2", "--quorum", "4", "--url",
         pool.coordinator.url, "--token", token, "--output", str(output), "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    result = PooledResult.model_validate_json(output.read_text(encoding="utf-8"))
    assert result.status == "completed" and is_eu_sourcing(result.query)
    assert result.query.group_by == ["stage", "partner_country"]
    assert sorted(result.answered) == ["miner-0", "miner-1", "miner-2", "miner-3"]
    # the nodes import nothing into the EU: no cell is published
    assert all(c.status is not CellStatus.PUBLISHED for c in result.cells)


def test_a_node_that_is_down_does_not_sink_the_query_and_is_named(pool: Pool) -> None:
    victim = pool.nodes["miner-3"]
    victim.process.terminate()
    victim.process.wait(timeout=10)
    result = pool.client.query(query(), quorum=3, deadline_seconds=8, wait_seconds=30)
    assert result.status == "completed", result.error
    outcome = {o.node_id: o for o in result.nodes}
    assert outcome["miner-3"].status is NodeStatus.EXPIRED
    assert "no answer by the deadline" in (outcome["miner-3"].message or "")
    assert sorted(result.answered) == ["miner-0", "miner-1", "miner-2"]
    # The same cell was published over all four nodes earlier in this module: over three it
    # would isolate miner-3 by subtraction, so the differencing guard suppresses it.
    assert result.cells[0].status is CellStatus.SUPPRESSED
    assert result.cells[0].reason == "differencing" and result.cells[0].value is None

    second = pool.nodes["miner-2"]
    second.process.terminate()
    second.process.wait(timeout=10)
    result = pool.client.query(query(), quorum=2, deadline_seconds=8, wait_seconds=30)
    assert sorted(result.answered) == ["miner-0", "miner-1"]
    assert result.cells[0].status is CellStatus.SUPPRESSED
    assert result.cells[0].value is None

    failed = pool.client.query(query(), quorum=3, deadline_seconds=5, wait_seconds=30)
    assert failed.status == "failed"
    assert (failed.error or "").startswith(
        "only 2 of the 3 answers required arrived by the deadline")


def test_operator_requests_without_the_token_are_refused(pool: Pool) -> None:
    import httpx

    response = httpx.get(f"{pool.coordinator.url}/v1/nodes")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    node_response = httpx.post(f"{pool.nodes['miner-0'].url}/v1/queries",
                               json=query().model_dump(mode="json"),
                               headers={"Authorization": "Bearer " + "w" * 40})
    assert node_response.status_code == 401
