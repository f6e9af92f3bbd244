"""Sending a query to every enrolled node at once and verifying what comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from coordinator._models import NodeOutcome, NodeStatus
from protocols import API_VERSION, AggregateQuery, ErrorBody, SignatureError, SignedAnswer, verify

__all__ = ["NodeAddress", "fan_out"]


@dataclass(frozen=True)
class NodeAddress:
    """Where and how to reach a node, and the key its answers must be signed with."""

    node_id: str
    url: str
    access_token: str
    public_key: str


def _check_answer(node: NodeAddress, query: AggregateQuery, signed: SignedAnswer) -> None:
    """Raise ``ValueError`` unless ``signed`` is ``node``'s verified answer to ``query``."""
    try:
        verify(node.public_key, signed.answer.model_dump(mode="json"), signed.signature)
    except SignatureError as exc:
        raise ValueError(f"signature check failed: {exc}") from exc
    answer = signed.answer
    if answer.node_id != node.node_id or answer.query_id != query.query_id:
        raise ValueError("answer is for another node or another query")
    if answer.kind is not query.kind or answer.group_by != query.group_by:
        raise ValueError("answer does not match the query's kind or grouping")
    if [tuple(c.key) for c in answer.cells] != query.public_keys():
        raise ValueError("answer cells do not match the query's public keys")
    if abs(answer.epsilon - query.epsilon) > 1e-12:
        raise ValueError("answer states a different epsilon than the query")


async def _ask(client: httpx.AsyncClient, node: NodeAddress, query: AggregateQuery,
               timeout: float) -> NodeOutcome:
    url = f"{node.url.rstrip('/')}/{API_VERSION}/queries"
    try:
        response = await client.post(
            url,
            json=query.model_dump(mode="json"),
            headers={"Authorization": f"Bearer {node.access_token}"},
            timeout=timeout,
        )
    except httpx.TimeoutException:
        return NodeOutcome(node_id=node.node_id, status=NodeStatus.UNREACHABLE,
                           message=f"no answer from {url} within {timeout:g} s")
    except httpx.HTTPError as exc:
        return NodeOutcome(node_id=node.node_id, status=NodeStatus.UNREACHABLE,
                           message=f"cannot reach {url}: {type(exc).__name__}: {exc}")
    if response.status_code == 403:
        try:
            body = ErrorBody.model_validate_json(response.content)
        except ValidationError:
            body = ErrorBody(error="refused", message=response.text[:500])
        status = (NodeStatus.BUDGET_EXCEEDED if body.error == "budget_exceeded"
                  else NodeStatus.REFUSED)
        return NodeOutcome(node_id=node.node_id, status=status, message=body.message)
    if response.status_code != 200:
        return NodeOutcome(node_id=node.node_id, status=NodeStatus.INVALID,
                           message=f"{url} answered HTTP {response.status_code}: "
                                   f"{response.text[:300]}")
    try:
        signed = SignedAnswer.model_validate_json(response.content)
        _check_answer(node, query, signed)
    except (ValidationError, ValueError) as exc:
        return NodeOutcome(node_id=node.node_id, status=NodeStatus.INVALID,
                           message=f"answer from {url} rejected: {exc}")
    return NodeOutcome(node_id=node.node_id, status=NodeStatus.ANSWERED,
                       epsilon=signed.answer.epsilon, signed=signed)


async def fan_out(*, nodes: Sequence[NodeAddress], query: AggregateQuery, timeout: float,
                  transport: httpx.AsyncBaseTransport | None = None) -> list[NodeOutcome]:
    """Ask every node concurrently; a node that is down or refuses does not stop the rest.

    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``).
    """
    async with httpx.AsyncClient(transport=transport) as client:
        return list(await asyncio.gather(*(_ask(client, n, query, timeout) for n in nodes)))
