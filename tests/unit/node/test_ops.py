"""The node's operations routes: readiness (database, schema, enrolment, agent), metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text
from sqlmodel import Session

import node
from node._db import AgentStatusRow, utcnow
from node._schema import VERSION_TABLE
from tests.unit.node.conftest import cobalt_query, insert_records, make_record

SECRET_QUANTITY = 777.125  # a record's quantity: must never show in metrics


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_ready_states_enrolment_and_the_agent(make_node: Callable[..., node.NodeContext]
                                              ) -> None:
    context = make_node()
    client = TestClient(node.create_app(context, run_agent=False))
    body = client.get("/v1/ready").json()
    assert body["status"] == "ready" and body["enrolled"] is False and body["agent"] is None
    with Session(context.engine) as session:
        session.add(AgentStatusRow(id=1, coordinator_url="https://pool.example",
                                   connected=False, consecutive_failures=3,
                                   last_contact_at=utcnow()))
        session.commit()
    agent = client.get("/v1/ready").json()["agent"]
    assert agent["connected"] is False and agent["consecutive_failures"] == 3
    assert 0 <= agent["seconds_since_contact"] < 60


def test_not_ready_when_the_schema_is_behind(make_node: Callable[..., node.NodeContext]
                                             ) -> None:
    context = make_node()
    with context.engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {VERSION_TABLE}"))
    client = TestClient(node.create_app(context, run_agent=False))
    response = client.get("/v1/ready")
    assert response.status_code == 503
    assert "no revision" in response.json()["schema"]


def test_metrics_show_budget_and_jobs_but_no_figure(make_node: Callable[..., node.NodeContext]
                                                    ) -> None:
    context = make_node()
    insert_records(context, [make_record("a", quantity_t=SECRET_QUANTITY)])
    client = TestClient(node.create_app(context, run_agent=False))
    before = samples(client.get("/metrics").text)
    assert before[("dpn_node_releases", ())] == 0
    assert before[("dpn_node_enrolled", ())] == 0
    token = context.settings.access_token.get_secret_value()
    released = client.post("/v1/queries", json=cobalt_query().model_dump(mode="json"),
                           headers={"Authorization": f"Bearer {token}"})
    assert released.status_code == 200
    body = client.get("/metrics").text
    after = samples(body)
    assert after[("dpn_node_releases", ())] == 1
    assert after[("dpn_node_budget_spent_epsilon", (("year", "2024"),))] == 1.0
    assert after[("dpn_node_budget_remaining_epsilon", (("year", "2024"),))] == 9.0
    assert after[("dpn_node_agent_connected", ())] == 0
    for value in released.json()["answer"]["sums"]:
        if value not in (0, 0.0):
            assert repr(float(value)) not in body
    assert "777.125" not in body and "7.77125e" not in body


def test_metrics_token_and_switch(make_node: Callable[..., node.NodeContext]) -> None:
    context = make_node()
    context.settings.metrics_token = SecretStr("m" * 40)
    client = TestClient(node.create_app(context, run_agent=False))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40}
                      ).status_code == 200
    context.settings.metrics_enabled = False
    assert client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40}
                      ).status_code == 404


def test_settings_refuse_a_weak_metrics_token_and_a_readable_tls_key(
    make_node: Callable[..., node.NodeContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    context = make_node()
    monkeypatch.setenv("DPN_NODE_METRICS_TOKEN", "changeme")
    with pytest.raises(node.NodeConfigError, match="metrics_token"):
        node.open_node(context.home)
    monkeypatch.delenv("DPN_NODE_METRICS_TOKEN")
    key = context.home / "tls-key.pem"
    key.write_text("not really a key")
    key.chmod(0o644)
    monkeypatch.setenv("DPN_NODE_TLS_KEY_FILE", "tls-key.pem")
    with pytest.raises(node.NodeConfigError, match="readable by other users"):
        node.open_node(context.home)
    monkeypatch.setenv("DPN_NODE_ENVIRONMENT", "development")
    node.open_node(context.home).engine.dispose()
    monkeypatch.delenv("DPN_NODE_ENVIRONMENT")
    key.chmod(0o600)
    node.open_node(context.home).engine.dispose()
