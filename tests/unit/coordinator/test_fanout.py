"""Fan-out: concurrent asks; down, refusing and forging nodes do not sink the query."""

from __future__ import annotations

import asyncio
import json

import httpx

from coordinator import NodeAddress, NodeStatus, fan_out
from protocols import ErrorBody
from tests.unit.coordinator.conftest import FakeNode, answer, coverage, query

TOKEN = "t" * 40


def test_each_node_gets_its_own_outcome() -> None:
    q = query()
    good, forger, mismatched = FakeNode("good"), FakeNode("forger"), FakeNode("mismatched")
    impostor = FakeNode("good")  # signs as "good" with another key

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert json.loads(request.content)["query_id"] == q.query_id
        if host == "good":
            a = answer(q, "good", [1.0, 2.0, 3.0, 4.0], coverage("COD"))
            return httpx.Response(200, json=good.signed(a).model_dump(mode="json"))
        if host == "forger":
            a = answer(q, "forger", [1.0, 2.0, 3.0, 4.0], coverage("COD"))
            return httpx.Response(200, json=impostor.signed(a).model_dump(mode="json"))
        if host == "mismatched":
            a = answer(query(), "mismatched", [1.0, 2.0, 3.0, 4.0], coverage("COD"))
            return httpx.Response(200, json=mismatched.signed(a).model_dump(mode="json"))
        if host == "broke":
            body = ErrorBody(error="budget_exceeded", message="requested 1, 0.5 remaining")
            return httpx.Response(403, json=body.model_dump())
        if host == "picky":
            body = ErrorBody(error="query_refused", message="commodity not allowed")
            return httpx.Response(403, json=body.model_dump())
        raise httpx.ConnectError("connection refused", request=request)

    nodes = [NodeAddress("good", "http://good", TOKEN, good.public_key),
             NodeAddress("forger", "http://forger", TOKEN, forger.public_key),
             NodeAddress("mismatched", "http://mismatched", TOKEN, mismatched.public_key),
             NodeAddress("broke", "http://broke", TOKEN, good.public_key),
             NodeAddress("picky", "http://picky", TOKEN, good.public_key),
             NodeAddress("down", "http://down:9", TOKEN, good.public_key)]
    outcomes = asyncio.run(fan_out(nodes=nodes, query=q, timeout=5.0,
                                   transport=httpx.MockTransport(handler)))
    by_node = {o.node_id: o for o in outcomes}
    assert by_node["good"].status is NodeStatus.ANSWERED
    assert by_node["good"].signed is not None and by_node["good"].epsilon == 1.0
    assert by_node["forger"].status is NodeStatus.INVALID
    assert "signature" in (by_node["forger"].message or "")
    assert by_node["mismatched"].status is NodeStatus.INVALID
    assert "another query" in (by_node["mismatched"].message or "")
    assert by_node["broke"].status is NodeStatus.BUDGET_EXCEEDED
    assert by_node["broke"].message == "requested 1, 0.5 remaining"
    assert by_node["picky"].status is NodeStatus.REFUSED
    assert by_node["down"].status is NodeStatus.UNREACHABLE
    assert "http://down:9/v1/queries" in (by_node["down"].message or "")
    assert "ConnectError" in (by_node["down"].message or "")


def test_a_slow_node_times_out_with_its_address() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    outcomes = asyncio.run(fan_out(
        nodes=[NodeAddress("slow", "http://slow:8701", TOKEN, FakeNode("slow").public_key)],
        query=query(), timeout=0.5, transport=httpx.MockTransport(handler)))
    assert outcomes[0].status is NodeStatus.UNREACHABLE
    assert outcomes[0].message == "no answer from http://slow:8701/v1/queries within 0.5 s"
