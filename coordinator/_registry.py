"""The node registry: enrolment by URL and key fingerprint, listing, addresses for fan-out."""

from __future__ import annotations

import httpx
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, select

from coordinator._db import NodeRow
from coordinator._errors import EnrolmentError
from coordinator._fanout import NodeAddress
from coordinator._models import EnrolRequest, NodeView
from protocols import API_VERSION, NodeInfo, key_id

__all__ = ["enrol_node", "list_nodes", "node_addresses"]


def _fetch_info(url: str, timeout: float) -> NodeInfo:
    info_url = f"{url.rstrip('/')}/{API_VERSION}/info"
    try:
        response = httpx.get(info_url, timeout=timeout)
        response.raise_for_status()
        return NodeInfo.model_validate_json(response.content)
    except httpx.HTTPError as exc:
        raise EnrolmentError(f"cannot reach {info_url}: {type(exc).__name__}: {exc}") from exc
    except ValidationError as exc:
        raise EnrolmentError(f"{info_url} did not answer like a crimmis-dpn node: {exc}") from exc


def _view(row: NodeRow) -> NodeView:
    return NodeView(node_id=row.node_id, display_name=row.display_name,
                    transport=row.transport, url=row.url, key_id=row.key_id,
                    public_key=row.public_key, active=row.active,
                    enrolled_at=row.enrolled_at, last_seen_at=row.last_seen_at)


def enrol_node(*, engine: Engine, request: EnrolRequest, timeout: float = 10.0) -> NodeView:
    """Development (push mode): register the node at ``request.url`` to push queries to it.

    The node's public key is fetched from the node and, when ``expected_key_id`` is given,
    must match it: the operator should confirm the fingerprint with the node owner.
    """
    info = _fetch_info(request.url, timeout)
    fingerprint = key_id(info.public_key)
    if fingerprint != info.key_id:
        raise EnrolmentError(f"node {info.node_id} states key id {info.key_id} "
                             f"but its key's fingerprint is {fingerprint}")
    if request.expected_key_id is not None and request.expected_key_id != fingerprint:
        raise EnrolmentError(
            f"node at {request.url} has key id {fingerprint}, expected "
            f"{request.expected_key_id}: do not enrol it until the owner confirms the key"
        )
    with Session(engine) as session:
        row = session.get(NodeRow, info.node_id) or NodeRow(
            node_id=info.node_id, display_name=info.display_name, url=request.url,
            public_key=info.public_key, key_id=fingerprint, access_token=request.access_token,
        )
        row.transport = "push"
        row.display_name, row.url = info.display_name, request.url.rstrip("/")
        row.public_key, row.key_id = info.public_key, fingerprint
        row.access_token, row.active = request.access_token, True
        session.add(row)
        session.commit()
        session.refresh(row)
        return _view(row)


def list_nodes(*, engine: Engine) -> list[NodeView]:
    """Every enrolled node, by id."""
    with Session(engine) as session:
        rows = session.exec(select(NodeRow).order_by(NodeRow.node_id)).all()
        return [_view(r) for r in rows]


def node_addresses(*, engine: Engine, node_ids: list[str] | None = None) -> list[NodeAddress]:
    """How to reach every active push-mode node (or those of ``node_ids``)."""
    with Session(engine) as session:
        rows = session.exec(select(NodeRow).where(NodeRow.active,
                                                  NodeRow.transport == "push")).all()
        return [NodeAddress(r.node_id, r.url or "", r.access_token or "", r.public_key)
                for r in rows if node_ids is None or r.node_id in node_ids]
