"""Receipts kept with the query history, the auditor API, and the differencing guard."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from protocols import (
    BudgetLimit,
    LedgerExport,
    MessageKind,
    PrivacyCost,
    RefusalBody,
    ResultBody,
)
from tests.unit.coordinator.conftest import Api, FakeNode, answer, coverage

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _answer_all(api: Api, nodes: list[FakeNode], q: object, *, values: float = 100.0) -> None:
    for node in nodes:
        job = api.poll(node)
        assert job is not None
        signed = node.signed(answer(job.query, node.node_id, [values, 0, 0, 0],  # type: ignore[arg-type]
                                    coverage("COD")))
        response = api.send(node, "/v1/jobs/result", MessageKind.RESULT,
                            ResultBody(job_id=job.job_id, answer=signed).model_dump(mode="json"))
        assert response.status_code == 200, response.text


def _export(node: FakeNode, budget: float = 10.0) -> LedgerExport:
    return LedgerExport(node_id=node.node_id, public_keys={}, exported_at=NOW,
                        budgets={"all": BudgetLimit(epsilon=budget)},
                        entries=list(node.ledger.entries))


def test_jobs_carry_their_participants(api: Api) -> None:
    nodes = [FakeNode(f"miner-{i}") for i in range(3)]
    for node in nodes:
        api.enrol(node)
    api.run(quorum=3)
    job = api.poll(nodes[0])
    assert job is not None and job.participants == ["miner-0", "miner-1", "miner-2"]


def test_receipts_are_kept_and_the_auditor_verifies_a_ledger(api: Api) -> None:
    nodes = [FakeNode(f"miner-{i}") for i in range(3)]
    for node in nodes:
        api.enrol(node)
    q = api.run(quorum=3)
    _answer_all(api, nodes, q)
    receipts = api.client.get("/v1/audit/receipts", headers=api.auditor,
                              params={"node_id": "miner-0"})
    assert receipts.status_code == 200
    assert [r["query_id"] for r in receipts.json()] == [q.query_id]
    published = api.client.get("/v1/audit/published/miner-0", headers=api.auditor).json()
    assert published == {q.query_id: "unit test"}
    # The export carries no key: the coordinator checks signatures with its registered key.
    report = api.client.post("/v1/audit/verify", headers=api.auditor,
                             json=_export(nodes[0]).model_dump(mode="json"))
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["findings"] == [] and body["chain_intact"] and body["figures_traceable"]
    # A ledger with its only entry deleted is caught: the receipt has no entry.
    empty = _export(nodes[0]).model_copy(update={"entries": []})
    findings = api.client.post("/v1/audit/verify", headers=api.auditor,
                               json=empty.model_dump(mode="json")).json()["findings"]
    assert {f["code"] for f in findings} == {"missing_entry"}


@pytest.mark.parametrize("variant", ["missing", "other payload"])
def test_an_answer_without_a_valid_receipt_is_rejected(api: Api, variant: str) -> None:
    node = FakeNode("miner-a")
    api.enrol(node)
    q = api.run(quorum=1)
    job = api.poll(node)
    assert job is not None
    signed = node.signed(answer(q, "miner-a", [1.0, 2.0, 3.0, 4.0], coverage("COD")))
    if variant == "missing":
        bad, reason = signed.model_copy(update={"receipt": None}), "no ledger receipt"
    else:
        other = node.ledger.record(query_id=q.query_id, payload={"other": "payload"},
                                   cost=PrivacyCost(epsilon=q.epsilon),
                                   accounting_periods=[2024], recorded_at=NOW)
        bad, reason = signed.model_copy(update={"receipt": other}), "does not match the answer"
    response = api.send(node, "/v1/jobs/result", MessageKind.RESULT,
                        ResultBody(job_id=job.job_id, answer=bad).model_dump(mode="json"))
    assert response.status_code == 409
    assert reason in response.json()["message"]
    assert api.client.get("/v1/audit/receipts", headers=api.auditor).json() == []


def test_the_auditor_cannot_write(api: Api) -> None:
    response = api.client.post("/v1/queries", headers=api.auditor, json={})
    assert response.status_code == 403
    assert api.client.post("/v1/audit/verify", json={}).status_code == 401


def test_a_query_that_isolates_one_node_by_difference_is_refused(api: Api) -> None:
    nodes = [FakeNode(f"miner-{i}") for i in range(4)]
    for node in nodes[:3]:
        api.enrol(node)
    q = api.run(quorum=3)
    _answer_all(api, nodes[:3], q)
    assert api.client.get(f"/v1/queries/{q.query_id}", headers=api.operator
                          ).json()["cells"][0]["status"] == "published"
    api.enrol(nodes[3])  # a fourth company joins: the same cell again would isolate it
    fields = {k: v for k, v in q.model_dump(mode="json").items() if k != "query_id"}
    response = api.client.post("/v1/queries", headers=api.operator, json={
        "query": {**fields, "query_id": "a" * 32}, "quorum": 3})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "differencing_refused"
    assert "only by miner-3" in body["message"]
    # a different cell definition (another year) is not affected
    other = {**fields, "query_id": "b" * 32, "periods": ["2023"]}
    assert api.client.post("/v1/queries", headers=api.operator,
                           json={"query": other, "quorum": 3}).status_code == 200


def test_cells_whose_answering_set_would_isolate_a_node_are_suppressed(api: Api) -> None:
    nodes = [FakeNode(f"miner-{i}") for i in range(4)]
    for node in nodes:
        api.enrol(node)
    first = api.run(quorum=4)
    _answer_all(api, nodes, first)
    # the same cell again; one node does not answer (refuses): 3 answer, differing by one
    fields = {k: v for k, v in first.model_dump(mode="json").items() if k != "query_id"}
    response = api.client.post("/v1/queries", headers=api.operator, json={
        "query": {**fields, "query_id": "c" * 32}, "quorum": 3})
    assert response.status_code == 200
    _answer_all(api, nodes[:3], None)
    refusal = api.poll(nodes[3])
    assert refusal is not None
    api.send(nodes[3], "/v1/jobs/refusal", MessageKind.REFUSAL,
             RefusalBody(job_id=refusal.job_id, reason="denied",
                         message="not this time").model_dump())
    pooled = api.client.get(f"/v1/queries/{'c' * 32}", headers=api.operator).json()
    assert pooled["status"] == "completed"
    cell = pooled["cells"][0]
    assert cell["status"] == "suppressed" and cell["reason"] == "differencing"
    assert cell["value"] is None
