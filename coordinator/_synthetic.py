"""Pooling nodes' DP synthetic tables, and balances computed from them.

Each node's table stands for ``estimated_records`` records (a DP estimate the node releases
with it), so every pooled row carries the weight ``estimated_records / rows of that table``:
weighted sums over the pooled table estimate the pooled totals. Rows are pooled without the
node they came from and sorted by commodity and country (the strata), so the pooled table
does not show which company a row stands for; each node's epsilon and evaluation scores are
kept beside it.

A balance from the pooled table (:func:`synthetic_balance`) sums weighted quantities per
country x stage x flow, suppressing cells fewer than the query's minimum of companies
declare, exactly as the aggregate path does, so the two can be compared cell by cell
(:func:`compare_balances`). Expect differences: synthetic tables bound each unit-year to a
few rows and model the joint distribution coarsely; the aggregate path is the reference.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from coordinator._models import Balance, CellStatus, NodeOutcome
from coordinator._verify import check_receipt
from protocols import (
    SYNTHETIC_COLUMNS,
    CoverageEntry,
    SignatureError,
    SignedSyntheticAnswer,
    SyntheticQuery,
    covers_slice,
    parse_period,
    verify,
)

__all__ = [
    "PooledSynthetic",
    "SyntheticCell",
    "check_synthetic_answer",
    "compare_balances",
    "pool_synthetic",
    "synthetic_balance",
]


class PooledSynthetic(BaseModel):
    """The pooled synthetic table of a query, with its provenance."""

    query: SyntheticQuery
    status: str = Field(description="queued | running | completed | failed")
    nodes: list[NodeOutcome]
    columns: list[str] = Field(default_factory=lambda: [*SYNTHETIC_COLUMNS, "weight"])
    rows: list[list[Any]] = Field(default_factory=list)
    epsilon_by_node: dict[str, float] = Field(default_factory=dict)
    evaluation_by_node: dict[str, dict[str, Any]] = Field(default_factory=dict)
    coverage_by_node: dict[str, list[CoverageEntry]] = Field(
        default_factory=dict, description="each answering node's declared coverage (public)")
    created_at: datetime
    finished_at: datetime | None = None
    quorum: int = 1
    deadline: datetime | None = None
    error: str | None = None


class SyntheticCell(BaseModel):
    """One cell of a balance computed from synthetic data, beside the aggregate figure."""

    country: str
    stage: str
    flow: str
    status: CellStatus
    synthetic: float | None = None
    aggregate: float | None = None
    aggregate_ci95: float | None = None


def check_synthetic_answer(*, node_id: str, public_key: str, query: SyntheticQuery,
                           signed: SignedSyntheticAnswer) -> None:
    """Raise ``ValueError`` unless ``signed`` is ``node_id``'s verified answer to ``query``."""
    try:
        verify(public_key, signed.answer.model_dump(mode="json"), signed.signature)
    except SignatureError as exc:
        raise ValueError(f"signature check failed: {exc}") from exc
    answer = signed.answer
    if answer.node_id != node_id or answer.query_id != query.query_id:
        raise ValueError("answer is for another node or another query")
    if list(answer.columns) != list(SYNTHETIC_COLUMNS):
        raise ValueError(f"synthetic columns {answer.columns} are not the standard's")
    if len(answer.rows) > query.rows or any(len(r) != len(SYNTHETIC_COLUMNS)
                                            for r in answer.rows):
        raise ValueError("synthetic rows do not have the requested shape")
    if abs(answer.epsilon - query.epsilon) > 1e-12 or answer.estimated_records < 0:
        raise ValueError("answer states a different epsilon than the query")
    check_receipt(node_id=node_id, public_key=public_key, query_id=query.query_id,
                  epsilon=answer.epsilon, payload=answer.model_dump(mode="json"),
                  receipt=signed.receipt)


def pool_synthetic(query: SyntheticQuery, answers: list[SignedSyntheticAnswer]
                   ) -> tuple[list[list[Any]], dict[str, Any]]:
    """Weighted rows of every answer, stratified (sorted) by commodity and country."""
    pooled: list[list[Any]] = []
    for signed in answers:
        answer = signed.answer
        weight = answer.estimated_records / len(answer.rows) if answer.rows else 0.0
        pooled.extend([*row, round(weight, 6)] for row in answer.rows)
    commodity, country = SYNTHETIC_COLUMNS.index("commodity"), SYNTHETIC_COLUMNS.index("country")
    pooled.sort(key=lambda r: (str(r[commodity]), str(r[country]), str(r[0])))
    extras = {
        "epsilon_by_node": {s.answer.node_id: s.answer.epsilon for s in answers},
        "evaluation_by_node": {s.answer.node_id: s.answer.evaluation for s in answers},
        "coverage_by_node": {s.answer.node_id: s.answer.coverage for s in answers},
    }
    return pooled, extras


def synthetic_balance(pooled: PooledSynthetic, *, commodity: str, year: int,
                      coverage: dict[str, list[CoverageEntry]] | None = None
                      ) -> list[SyntheticCell]:
    """Weighted synthetic quantities per country x stage x flow for one year."""
    index = {name: i for i, name in enumerate(pooled.columns)}
    totals: dict[tuple[str, str, str], float] = {}
    for row in pooled.rows:
        if row[index["commodity"]] != commodity or row[index["quantity_t"]] is None:
            continue
        if parse_period(row[index["period"]]).year != year:
            continue
        key = (row[index["country"]], row[index["stage"]], row[index["flow"]])
        totals[key] = totals.get(key, 0.0) + row[index["quantity_t"]] * row[index["weight"]]
    declared = coverage if coverage is not None else pooled.coverage_by_node
    cells = []
    for (country, stage, flow), value in sorted(totals.items()):
        contributors = sum(
            covers_slice(entries, commodities=[commodity], stages=[stage], flows=[flow],
                         countries=[country])
            for entries in declared.values())
        published = contributors >= pooled.query.min_contributors
        cells.append(SyntheticCell(
            country=country, stage=stage, flow=flow,
            status=CellStatus.PUBLISHED if published else CellStatus.SUPPRESSED,
            synthetic=value if published else None))
    return cells


_FLOW_FIELDS = {"production": "production", "import": "imports", "export": "exports",
                "consumption": "consumption", "recycling_input": "recycling_input",
                "waste": "waste"}


def compare_balances(cells: list[SyntheticCell], balance: Balance) -> list[SyntheticCell]:
    """Put the aggregate path's published figure (and its 95% interval) beside each cell."""
    rows = {(r.country, r.stage): r for r in balance.rows}
    compared = []
    for cell in cells:
        row = rows.get((cell.country, cell.stage))
        field_name = _FLOW_FIELDS.get(cell.flow)
        figure = getattr(row, field_name) if row is not None and field_name else None
        compared.append(cell.model_copy(update={
            "aggregate": figure.value if figure is not None else None,
            "aggregate_ci95": figure.ci95 if figure is not None else None}))
    return compared
