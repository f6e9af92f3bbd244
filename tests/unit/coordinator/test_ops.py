"""The coordinator's operations routes: readiness, Prometheus metrics, request ids, JSON logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from coordinator import CoordinatorConfigError, create_app, init_coordinator, open_coordinator
from coordinator._observability import configure_logging
from coordinator._schema import VERSION_TABLE
from protocols import MessageKind, ResultBody
from tests.unit.coordinator.conftest import FakeNode, answer, coverage
from tests.unit.coordinator.test_api import Api

SECRET_FIGURE = 123457.0  # a node's answer: must never show in metrics


def make_api(tmp_path: Path) -> Iterator[Api]:
    context = init_coordinator(home=tmp_path / "coord")
    settings = context.settings
    with TestClient(create_app(context)) as client:  # the lifespan applies log_format
        yield Api(client, context,
                  {"Authorization": f"Bearer {settings.operator_token.get_secret_value()}"},
                  {"Authorization": f"Bearer {settings.auditor_token.get_secret_value()}"})
    context.engine.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path)


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def scrape(api: Api) -> str:
    response = api.client.get("/metrics", headers=api.auditor)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_ready_when_the_database_is_at_the_head(api: Api) -> None:
    response = api.client.get("/v1/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_not_ready_when_the_schema_is_behind(api: Api) -> None:
    with api.context.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'older'"))
    response = api.client.get("/v1/ready")
    assert response.status_code == 503
    assert "expected" in response.json()["schema"]
    assert api.client.get("/v1/health").status_code == 200  # alive all the same


def test_metrics_need_a_token(api: Api) -> None:
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40}
                          ).status_code == 401
    assert api.client.get("/metrics", headers=api.operator).status_code == 200


def test_metrics_follow_a_query_and_never_show_an_answer(api: Api) -> None:
    before = samples(scrape(api))
    assert before[("dpn_coordinator_nodes", (("state", "active"),))] == 0
    node = FakeNode("miner-a")
    api.enrol(node)
    q = api.run(quorum=1)
    job = api.poll(node)
    assert job is not None
    signed = node.signed(answer(q, "miner-a", [SECRET_FIGURE, 0, 0, 0], coverage("COD")))
    response = api.send(node, "/v1/jobs/result", MessageKind.RESULT,
                        ResultBody(job_id=job.job_id, answer=signed).model_dump(mode="json"))
    assert response.status_code == 200
    assert api.client.get(f"/v1/queries/{q.query_id}", headers=api.operator
                          ).json()["status"] == "completed"
    body = scrape(api)
    after = samples(body)
    assert after[("dpn_coordinator_queries", (("status", "completed"),))] == 1
    assert after[("dpn_coordinator_jobs", (("state", "answered"),))] == 1
    assert after[("dpn_coordinator_nodes", (("state", "active"),))] == 1
    assert 0 <= after[("dpn_coordinator_node_last_seen_seconds", (("node_id", "miner-a"),))] < 60
    assert after[("dpn_coordinator_query_result_seconds_count", ())] == 1
    polls = [v for (name, labels), v in after.items()
             if name == "dpn_coordinator_http_request_duration_seconds_count"
             and ("route", "/v1/jobs/poll") in labels]
    assert polls and sum(polls) >= 1
    assert "123457" not in body and "1.23457e" not in body


def test_request_ids_are_returned_and_kept_when_plain(api: Api) -> None:
    given = api.client.get("/v1/health", headers={"X-Request-ID": "trace-7"})
    assert given.headers["x-request-id"] == "trace-7"
    made = api.client.get("/v1/health", headers={"X-Request-ID": "bad id\r"})
    assert made.headers["x-request-id"] != "bad id" and len(made.headers["x-request-id"]) == 32


@pytest.fixture
def json_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, io.StringIO]]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setenv("DPN_COORDINATOR_LOG_FORMAT", "json")
    for made in make_api(tmp_path):
        assert made.context.settings.log_format == "json"
        yield made, stream
    configure_logging("text", service="test")
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = False


def test_json_logs_carry_the_request_id(json_api: tuple[Api, io.StringIO]) -> None:
    api, stream = json_api
    api.client.get("/v1/nodes", headers={**api.auditor, "X-Request-ID": "audit-run-1"})
    api.enrol(FakeNode("miner-b"))  # the enrolment logs a line inside the request
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    access = [ln for ln in lines if ln.get("logger") == "dpn.access"]
    audit = [ln for ln in access if ln.get("request_id") == "audit-run-1"]
    assert audit and audit[0]["route"] == "/v1/nodes" and audit[0]["status"] == 200
    assert all(ln["service"] == "coordinator" and ln["request_id"] for ln in access)
    inside = [ln for ln in lines if ln.get("logger") == "coordinator.enrolment"]
    assert inside and all(len(ln["request_id"]) == 32 for ln in inside)
    assert inside[0]["request_id"] in {ln["request_id"] for ln in access
                                       if ln["route"] == "/v1/enrol"}
    assert "Bearer" not in stream.getvalue()


def test_settings_refuse_a_weak_metrics_token_and_a_readable_tls_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "coord"
    init_coordinator(home=home).engine.dispose()
    monkeypatch.setenv("DPN_COORDINATOR_METRICS_TOKEN", "REPLACE-me-with-a-real-token-please-now")
    with pytest.raises(CoordinatorConfigError, match="metrics_token"):
        open_coordinator(home)
    monkeypatch.setenv("DPN_COORDINATOR_METRICS_TOKEN", "k" * 40)
    key = tmp_path / "tls-key.pem"
    key.write_text("not really a key")
    key.chmod(0o640)
    monkeypatch.setenv("DPN_COORDINATOR_TLS_KEY_FILE", str(key))
    with pytest.raises(CoordinatorConfigError, match="readable by other users"):
        open_coordinator(home)
    key.chmod(0o600)
    context = open_coordinator(home)
    assert context.settings.metrics_token is not None
    context.engine.dispose()
