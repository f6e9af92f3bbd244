"""Push mode (development): sending a query to nodes by URL and verifying the answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from coordinator._models import NodeOutcome, NodeStatus
from coordinator._verify import check_answer
from protocols import API_VERSION, AggregateQuery, ErrorBody, SignedAnswer

__all__ = ["NodeAddress", "fan_out"]


@dataclass(frozen=True)
class NodeAddress:
    """Where and how to reach a node, and the key its answers must be signed with."""

    node_id: str
    url: str
    access_token: str
    public_key: str


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
        check_answer(node_id=node.node_id, public_key=node.public_key, query=query,
                     signed=signed)
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
