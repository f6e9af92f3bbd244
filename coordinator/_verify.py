"""Checking that a node's answer is really that node's answer to that query."""

from __future__ import annotations

from protocols import AggregateQuery, SignatureError, SignedAnswer, verify

__all__ = ["check_answer"]


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
