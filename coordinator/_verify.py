"""Checking that a node's answer is really that node's answer to that query."""

from __future__ import annotations

from typing import Any

from protocols import (
    AggregateQuery,
    Receipt,
    SignatureError,
    SignedAnswer,
    payload_digest,
    verify,
)

__all__ = ["check_answer", "check_receipt"]


def check_receipt(*, node_id: str, public_key: str, query_id: str, epsilon: float,
                  payload: dict[str, Any], receipt: Receipt | None) -> Receipt:
    """Raise ``ValueError`` unless ``receipt`` is ``node_id``'s signed ledger receipt of
    exactly ``payload`` (the answer as signed) for ``query_id``; return it."""
    if receipt is None:
        raise ValueError("the answer has no ledger receipt; every release must be recorded in "
                         "the node's ledger (upgrade the node)")
    try:
        verify(public_key, receipt.body(), receipt.signature)
    except SignatureError as exc:
        raise ValueError(f"ledger receipt signature check failed: {exc}") from exc
    if receipt.node_id != node_id or receipt.query_id != query_id:
        raise ValueError("the ledger receipt is for another node or another query")
    if receipt.payload_sha256 != payload_digest(payload):
        raise ValueError("the ledger receipt does not match the answer's content")
    if receipt.cost.rho == 0 and abs(receipt.cost.epsilon - epsilon) > 1e-12:
        raise ValueError("the ledger receipt records a different privacy cost than the answer")
    return receipt


def check_answer(*, node_id: str, public_key: str, query: AggregateQuery,
                 signed: SignedAnswer) -> None:
    """Raise ``ValueError`` unless ``signed`` is ``node_id``'s verified answer to ``query``."""
    try:
        verify(public_key, signed.answer.model_dump(mode="json"), signed.signature)
    except SignatureError as exc:
        raise ValueError(f"signature check failed: {exc}") from exc
    answer = signed.answer
    if answer.node_id != node_id or answer.query_id != query.query_id:
        raise ValueError("answer is for another node or another query")
    if answer.kind is not query.kind or answer.group_by != query.group_by:
        raise ValueError("answer does not match the query's kind or grouping")
    cells = query.cell_count()
    wanted = {"sums": query.kind in ("sum", "mean"), "counts": query.kind in ("count", "mean")}
    for name, needed in wanted.items():
        values = getattr(answer, name)
        if needed and (values is None or len(values) != cells):
            raise ValueError(f"answer {name} do not cover the query's {cells} public keys")
        if not needed and values is not None:
            raise ValueError(f"answer has {name}, which a {query.kind} query does not release")
    if abs(answer.epsilon - query.epsilon) > 1e-12:
        raise ValueError("answer states a different epsilon than the query")
    check_receipt(node_id=node_id, public_key=public_key, query_id=query.query_id,
                  epsilon=answer.epsilon, payload=answer.model_dump(mode="json"),
                  receipt=signed.receipt)
