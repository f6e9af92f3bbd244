"""Fixtures for node tests: a node home with a few records inserted directly."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

import node
from node._db import ImportRow, RecordRow
from protocols import AggregateQuery, CoverageEntry, parse_period

#: A mapping for small CSV files with columns id, month, commodity, flow, country, qty, unit.
SIMPLE_MAPPING = """\
[columns]
record_id = "id"
period = "month"
commodity = "commodity"
flow = "flow"
country = "country"
quantity = "qty"
unit = "unit"

[constants]
stage = "mining"
basis = "contained"
"""
SIMPLE_HEADER = "id,month,commodity,flow,country,qty,unit\n"

COVERAGE = [
    CoverageEntry(commodity="cobalt", stages=["mining"],
                  flows=["production", "export", "stock_level"], countries=["COD", "ZMB"]),
]


def make_record(record_id: str, *, period: str = "2024-01", flow: str = "production",
                country: str = "COD", quantity_t: float = 100.0, unit: str = "site:a",
                partner: str | None = None, commodity: str = "cobalt",
                stage: str = "mining") -> dict[str, Any]:
    """A row of the records table (already normalised)."""
    p = parse_period(period)
    first, last = p.month_index
    return {
        "record_id": record_id, "period": period, "year": p.year, "first_month": first,
        "last_month": last, "commodity": commodity, "stage": stage, "flow": flow,
        "country": country, "partner_country": partner, "quantity": quantity_t, "unit": "t",
        "basis": "contained", "quantity_t": quantity_t, "contribution_unit": unit,
    }


def insert_records(context: node.NodeContext, rows: list[dict[str, Any]]) -> None:
    """Insert records as one import (bypassing file parsing)."""
    with context.engine.begin() as conn:
        import_id = conn.execute(insert(ImportRow.__table__).values(  # type: ignore[attr-defined]
            file_name="fixture", sha256=uuid.uuid4().hex * 2, mapping_sha256="0" * 64,
            row_count=len(rows))).inserted_primary_key[0]
        conn.execute(insert(RecordRow.__table__),  # type: ignore[attr-defined]
                     [{**r, "import_id": import_id} for r in rows])


def cobalt_query(**overrides: Any) -> AggregateQuery:
    """A sum of cobalt production and exports in COD and ZMB in 2024, by country and flow."""
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production", "export"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country", "flow"], "epsilon": 1.0,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 2000.0}, "purpose": "unit test",
    }
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., node.NodeContext]]:
    """Factory of initialised nodes (SQLite unless ``database_url`` is given)."""
    made: list[node.NodeContext] = []

    def factory(*, database_url: str | None = None, epsilon_per_year: float = 10.0,
                max_epsilon_per_release: float = 2.0, name: str = "acme") -> node.NodeContext:
        policy = node.Policy(
            budget=node.BudgetPolicy(epsilon_per_year=epsilon_per_year,
                                     max_epsilon_per_release=max_epsilon_per_release),
            coverage=COVERAGE,
        )
        context = node.init_node(home=tmp_path / name, node_id=name, display_name=name.title(),
                                 database_url=database_url, policy=policy)
        made.append(context)
        return context

    yield factory
    for context in made:
        context.engine.dispose()
