"""The coordinator's HTTP API: roles, enrolment, the pull protocol, refusals of bad envelopes."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coordinator import CoordinatorConfigError
from coordinator._settings import load_settings
from protocols import (
    COORDINATOR_ID,
    EnrolBody,
    MessageKind,
    PollBody,
    RefusalBody,
    ResultBody,
    SignedEnvelope,
    StatusBody,
    seal_envelope,
)
from tests.unit.coordinator.conftest import Api, FakeNode, answer, coverage, query


def test_every_operator_route_needs_the_token(api: Api) -> None:
    assert api.client.get("/v1/health").status_code == 200
    for method, path in (("GET", "/v1/nodes"), ("POST", "/v1/queries"),
                         ("POST", "/v1/balances"), ("GET", "/v1/queries/abc"),
                         ("POST", "/v1/enrolment-tokens")):
        response = api.client.request(method, path, json={})
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"


def test_the_auditor_reads_history_but_cannot_run_queries(api: Api) -> None:
    q = api.run(quorum=1)
    history = api.client.get("/v1/queries", headers=api.auditor)
    assert history.status_code == 200
    assert [row["query_id"] for row in history.json()] == [q.query_id]
    assert api.client.get(f"/v1/queries/{q.query_id}", headers=api.auditor).status_code == 200
    for path, body in (("/v1/queries", {"query": query().model_dump(mode="json")}),
                       ("/v1/enrolment-tokens", {}), ("/v1/nodes/x/revoke", {})):
        response = api.client.post(path, headers=api.auditor, json=body)
        assert response.status_code == 403, path
        assert response.json()["error"] == "forbidden"


def test_push_enrolment_is_refused_unless_development_allows_it(api: Api) -> None:
    response = api.client.post("/v1/nodes", headers=api.operator, json={
        "url": "http://127.0.0.1:9", "access_token": "a" * 40})
    assert response.status_code == 403
    assert "push mode is disabled" in response.json()["message"]


def test_a_query_with_no_enrolled_node_fails_and_says_why(api: Api) -> None:
    q = api.run()
    stored = api.client.get(f"/v1/queries/{q.query_id}", headers=api.operator).json()
    assert stored["status"] == "failed"
    assert stored["error"] == "no node is enrolled"
    missing = api.client.get(f"/v1/queries/{'0' * 32}", headers=api.operator)
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_query"


def test_enrolment_tokens_are_one_time_and_bound(api: Api) -> None:
    node = FakeNode("miner-a")
    token = api.token("miner-a")
    body = EnrolBody(token=token, node_id="miner-a", display_name="A",
                     public_key=node.public_key).model_dump()
    assert api.send(node, "/v1/enrol", MessageKind.ENROL, body).status_code == 200
    thief = FakeNode("miner-x")
    stolen = EnrolBody(token=token, node_id="miner-x", display_name="X",
                       public_key=thief.public_key).model_dump()
    again = api.send(thief, "/v1/enrol", MessageKind.ENROL, stolen)
    assert again.status_code == 400
    assert "already used" in again.json()["message"]

    other = FakeNode("miner-b")
    bound = EnrolBody(token=api.token("miner-c"), node_id="miner-b", display_name="B",
                      public_key=other.public_key).model_dump()
    refused = api.send(other, "/v1/enrol", MessageKind.ENROL, bound)
    assert refused.status_code == 400
    assert "this token is for node 'miner-c'" in refused.json()["message"]


def test_enrolment_must_be_signed_by_the_key_it_enrols(api: Api) -> None:
    node, impostor = FakeNode("miner-a"), FakeNode("miner-a")
    body = EnrolBody(token=api.token(), node_id="miner-a", display_name="A",
                     public_key=node.public_key).model_dump()
    response = api.send(impostor, "/v1/enrol", MessageKind.ENROL, body)
    assert response.status_code == 400
    assert "not signed by its registered key" in response.json()["message"]


def test_pull_round_trip_pools_the_answers(api: Api) -> None:
    nodes = [FakeNode(f"miner-{i}") for i in range(3)]
    for node in nodes:
        api.enrol(node)
    q = api.run(quorum=3)
    for index, node in enumerate(nodes):
        job = api.poll(node)
        assert job is not None and job.query == q
        assert api.poll(node) is None  # delivered once (redelivered only if never reported)
        status = api.send(node, "/v1/jobs/status", MessageKind.STATUS,
                          StatusBody(job_id=job.job_id, state="running").model_dump())
        assert status.status_code == 200
        signed = node.signed(answer(q, node.node_id, [100.0 * (index + 1), 0, 0, 0],
                                    coverage("COD")))
        result = api.send(node, "/v1/jobs/result", MessageKind.RESULT,
                          ResultBody(job_id=job.job_id, answer=signed).model_dump(mode="json"))
        assert result.status_code == 200, result.text
    pooled = api.client.get(f"/v1/queries/{q.query_id}", headers=api.operator).json()
    assert pooled["status"] == "completed"
    assert pooled["cells"][0]["value"] == 600.0
    assert [n["status"] for n in pooled["nodes"]] == ["answered"] * 3


def test_a_retried_result_counts_once(api: Api) -> None:
    node = FakeNode("miner-a")
    api.enrol(node)
    q = api.run(quorum=1)
    job = api.poll(node)
    assert job is not None
    body = ResultBody(job_id=job.job_id, answer=node.signed(
        answer(q, "miner-a", [1.0, 2.0, 3.0, 4.0], coverage("COD")))).model_dump(mode="json")
    first = api.send(node, "/v1/jobs/result", MessageKind.RESULT, body)
    second = api.send(node, "/v1/jobs/result", MessageKind.RESULT, body)  # fresh nonce
    acks = [SignedEnvelope.model_validate(r.json()).envelope.body for r in (first, second)]
    assert acks == [{"job_id": job.job_id, "duplicate": False},
                    {"job_id": job.job_id, "duplicate": True}]


def test_refusals_and_quorum_failure_say_why(api: Api) -> None:
    nodes = [FakeNode(f"miner-{i}") for i in range(2)]
    for node in nodes:
        api.enrol(node)
    q = api.run(quorum=2)
    job = api.poll(nodes[0])
    assert job is not None
    refusal = RefusalBody(job_id=job.job_id, reason="budget_exceeded",
                          message="requested epsilon 1 per year, but 2024: 0.5 remaining")
    assert api.send(nodes[0], "/v1/jobs/refusal", MessageKind.REFUSAL,
                    refusal.model_dump()).status_code == 200
    from coordinator import finalize_query

    finalize_query(engine=api.context.engine, query_id=q.query_id,
                   now=datetime.now(UTC) + timedelta(minutes=5))
    result = api.client.get(f"/v1/queries/{q.query_id}", headers=api.operator).json()
    assert result["status"] == "failed"
    assert result["error"].startswith("only 0 of the 2 answers required arrived by the deadline")
    assert "miner-0: budget_exceeded (requested epsilon 1" in result["error"]
    assert "miner-1: expired (no answer by the deadline (last state: queued))" in result["error"]


def test_an_answer_that_does_not_match_its_job_is_rejected(api: Api) -> None:
    node = FakeNode("miner-a")
    api.enrol(node)
    api.run(quorum=1)
    job = api.poll(node)
    assert job is not None
    wrong = node.signed(answer(query(), "miner-a", [1.0] * 4, coverage("COD")))
    response = api.send(node, "/v1/jobs/result", MessageKind.RESULT,
                        ResultBody(job_id=job.job_id, answer=wrong).model_dump(mode="json"))
    assert response.status_code == 409
    assert "another node or another query" in response.json()["message"]


@pytest.mark.parametrize("attack", ["forged", "replayed", "expired", "misaddressed",
                                    "unknown", "revoked", "wrong_kind"])
def test_bad_envelopes_are_refused_and_logged(api: Api, attack: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    node = FakeNode("miner-a")
    api.enrol(node)
    body = PollBody(wait_seconds=0).model_dump()
    seal: dict[str, Any] = {}
    sender = node
    if attack == "forged":
        sender = FakeNode("miner-a")  # another key claiming to be miner-a
    elif attack == "expired":
        seal["now"] = datetime.now(UTC) - timedelta(minutes=10)
    elif attack == "misaddressed":
        seal["recipient"] = "another-coordinator"
    elif attack == "unknown":
        sender = FakeNode("stranger")
    elif attack == "revoked":
        assert api.client.post("/v1/nodes/miner-a/revoke",
                               headers=api.operator).status_code == 200
    kind = MessageKind.RESULT if attack == "wrong_kind" else MessageKind.POLL
    signed = seal_envelope(sender.key, sender=sender.node_id,
                           recipient=seal.pop("recipient", COORDINATOR_ID), kind=kind,
                           body=body, **seal)
    payload = signed.model_dump(mode="json")
    with caplog.at_level(logging.WARNING, logger="coordinator.envelopes"):
        if attack == "replayed":
            assert api.client.post("/v1/jobs/poll", json=payload).status_code == 204
        response = api.client.post("/v1/jobs/poll", json=payload)
    expected = {"forged": "envelope_forged", "replayed": "envelope_replayed",
                "expired": "envelope_expired", "misaddressed": "envelope_misaddressed",
                "unknown": "envelope_forged", "revoked": "node_revoked",
                "wrong_kind": "envelope_misaddressed"}[attack]
    assert response.status_code == 401
    assert response.json()["error"] == expected
    assert any("refused" in record.getMessage() for record in caplog.records)


def test_an_unsigned_message_is_refused(api: Api) -> None:
    node = FakeNode("miner-a")
    api.enrol(node)
    signed = seal_envelope(node.key, sender="miner-a", recipient=COORDINATOR_ID,
                           kind=MessageKind.POLL, body={}).model_dump(mode="json")
    signed["signature"] = ""
    assert api.client.post("/v1/jobs/poll", json=signed).status_code == 422


def test_key_rotation_replaces_the_key(api: Api) -> None:
    from protocols import RotateKeyBody, sign

    node = FakeNode("miner-a")
    api.enrol(node)
    new = FakeNode("miner-a")
    proof = sign(new.key, {"node_id": "miner-a", "new_public_key": new.public_key})
    response = api.send(node, "/v1/keys/rotate", MessageKind.ROTATE_KEY,
                        RotateKeyBody(new_public_key=new.public_key, proof=proof).model_dump())
    assert response.status_code == 200, response.text
    assert api.send(node, "/v1/jobs/poll", MessageKind.POLL, {}).json()["error"] == \
        "envelope_forged"
    assert api.send(new, "/v1/jobs/poll", MessageKind.POLL,
                    {"wait_seconds": 0}).status_code == 204


def test_settings_refuse_a_default_operator_token(tmp_path: Path) -> None:
    home = tmp_path / "c"
    home.mkdir()
    (home / "coordinator.toml").write_text(
        'database_url = "sqlite://"\noperator_token = "changeme"\n'
        f'auditor_token = "{uuid.uuid4().hex}{uuid.uuid4().hex}"\n')
    with pytest.raises(CoordinatorConfigError, match="operator_token is a default or too short"):
        load_settings(home)


def test_the_documented_example_settings_refuse_their_placeholder_tokens(tmp_path: Path) -> None:
    home = tmp_path / "c"
    home.mkdir()
    example = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "coordinator.toml"
    (home / "coordinator.toml").write_text(example.read_text())
    with pytest.raises(CoordinatorConfigError) as refused:
        load_settings(home)
    assert "operator_token: operator_token is a default" in str(refused.value)
    assert "auditor_token" in str(refused.value)
