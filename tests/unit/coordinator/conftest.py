"""Helpers for coordinator tests: signed node answers built from protocols alone, and the
``api`` fixture (a coordinator app behind a test client, with both role tokens)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from coordinator import CoordinatorContext, create_app, init_coordinator
from protocols import (
    COORDINATOR_ID,
    AggregateQuery,
    CoverageEntry,
    EnrolBody,
    InMemoryLedger,
    JobSpec,
    MessageKind,
    NodeAnswer,
    PollBody,
    PrivacyCost,
    SignedAnswer,
    SignedEnvelope,
    generate_private_key,
    key_id,
    open_envelope,
    public_key_b64,
    seal_envelope,
    sign,
)


def query(**overrides: Any) -> AggregateQuery:
    """Cobalt production and exports in COD and ZMB, 2024, by country and flow."""
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production", "export"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country", "flow"], "epsilon": 1.0,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 1000.0}, "purpose": "unit test",
    }
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


def coverage(*countries: str, flows: tuple[str, ...] = ("production", "export")
             ) -> list[CoverageEntry]:
    return [CoverageEntry(commodity="cobalt", stages=["mining"], flows=list(flows),
                          countries=list(countries))]


def answer(q: AggregateQuery, node_id: str, values: list[float], cover: list[CoverageEntry],
           *, scale: float = 1000.0) -> NodeAnswer:
    """A node's answer with the given (already 'noisy') sums in public-key order."""
    return NodeAnswer(
        query_id=q.query_id, node_id=node_id, kind=q.kind, measure=q.measure,
        group_by=list(q.group_by),
        sums=list(values),
        sum_scale=scale, epsilon=q.epsilon, accounting_periods=q.accounting_periods(),
        mechanism="test", privacy_unit="test", coverage=cover,
        released_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


class FakeNode:
    """A node identity that signs answers."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.key: Ed25519PrivateKey = generate_private_key()
        self.public_key = public_key_b64(self.key)
        self.ledger = InMemoryLedger(self.key, node_id, key_id(self.public_key))

    def signed(self, a: NodeAnswer) -> SignedAnswer:
        """The answer signed, with the receipt of its (in-memory) ledger entry."""
        payload = a.model_dump(mode="json")
        receipt = self.ledger.record(query_id=a.query_id, payload=payload,
                                     cost=PrivacyCost(epsilon=a.epsilon),
                                     accounting_periods=list(a.accounting_periods),
                                     recorded_at=a.released_at)
        return SignedAnswer(answer=a, signature=sign(self.key, payload),
                            key_id=key_id(self.public_key), receipt=receipt)


@dataclass
class Api:
    client: TestClient
    context: CoordinatorContext
    operator: dict[str, str]
    auditor: dict[str, str]

    def token(self, node_id: str | None = None) -> str:
        response = self.client.post("/v1/enrolment-tokens", headers=self.operator,
                                    json={"node_id": node_id})
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def send(self, node: FakeNode, path: str, kind: MessageKind, body: dict[str, Any],
             **seal: Any) -> Any:
        signed = seal_envelope(node.key, sender=node.node_id,
                               recipient=seal.pop("recipient", COORDINATOR_ID), kind=kind,
                               body=body, **seal)
        return self.client.post(path, json=signed.model_dump(mode="json"))

    def enrol(self, node: FakeNode) -> None:
        body = EnrolBody(token=self.token(node.node_id), node_id=node.node_id,
                         display_name=node.node_id, public_key=node.public_key)
        response = self.send(node, "/v1/enrol", MessageKind.ENROL, body.model_dump())
        assert response.status_code == 200, response.text

    def poll(self, node: FakeNode, wait: float = 0.0) -> JobSpec | None:
        response = self.send(node, "/v1/jobs/poll", MessageKind.POLL,
                             PollBody(wait_seconds=wait).model_dump())
        if response.status_code == 204:
            return None
        assert response.status_code == 200, response.text
        envelope = open_envelope(SignedEnvelope.model_validate(response.json()),
                                 public_key=self.context.public_key, recipient=node.node_id,
                                 kinds={MessageKind.JOB}, remember_nonce=lambda *_: True)
        return JobSpec.model_validate(envelope.body)

    def run(self, quorum: int = 3, deadline: float = 60.0, **query_fields: Any) -> Any:
        q = query(**query_fields)
        response = self.client.post("/v1/queries", headers=self.operator, json={
            "query": q.model_dump(mode="json"), "quorum": quorum,
            "deadline_seconds": deadline})
        assert response.status_code == 200, response.text
        return q


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    context = init_coordinator(home=tmp_path / "coord", port=8799)
    settings = context.settings
    with TestClient(create_app(context)) as client:
        yield Api(client, context,
                  {"Authorization": f"Bearer {settings.operator_token.get_secret_value()}"},
                  {"Authorization": f"Bearer {settings.auditor_token.get_secret_value()}"})
    context.engine.dispose()
