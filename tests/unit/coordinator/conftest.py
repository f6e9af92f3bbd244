"""Helpers for coordinator tests: signed node answers built from protocols alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import (
    AggregateQuery,
    CoverageEntry,
    NodeAnswer,
    SignedAnswer,
    generate_private_key,
    key_id,
    public_key_b64,
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

    def signed(self, a: NodeAnswer) -> SignedAnswer:
        return SignedAnswer(answer=a, signature=sign(self.key, a.model_dump(mode="json")),
                            key_id=key_id(self.public_key))
