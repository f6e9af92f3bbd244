"""Wire models of synthetic-data releases (data tier ``bulk``).

A :class:`SyntheticQuery` asks every node for a DP synthetic table of its records in the
standard's normalised form; a node answers with a :class:`SignedSyntheticAnswer`: the rows,
the privacy spent (charged to its budget like any release), an estimate of how many records
the rows stand for, and the evaluation scores its owner's policy lets out (never rows of
real data).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocols._codes import Commodity
from protocols._coverage import CoverageEntry
from protocols._ledger import Receipt
from protocols._periods import parse_period
from protocols._record import PeriodText

__all__ = [
    "SYNTHETIC_COLUMNS",
    "SignedSyntheticAnswer",
    "SyntheticAnswer",
    "SyntheticQuery",
]

#: Columns of a synthetic table, in order.
SYNTHETIC_COLUMNS = (
    "period", "commodity", "stage", "flow", "country", "partner_country", "contract_type",
    "quantity_t", "price_usd_t",
)
_QUERY_ID = re.compile(r"[0-9a-f]{32}")


class SyntheticQuery(BaseModel):
    """Ask for DP synthetic records of some commodities and periods."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_id: str
    kind: Literal["synthetic"] = "synthetic"
    method: Literal["dp_copula", "mst"] = "dp_copula"
    commodities: Annotated[list[Commodity], Field(min_length=1)]
    periods: Annotated[list[PeriodText], Field(min_length=1, max_length=120)]
    epsilon: Annotated[float, Field(ge=1e-4, le=10)]
    rows: Annotated[int, Field(ge=100, le=200_000)] = 5_000
    quantity_max_t: Annotated[float, Field(gt=0, le=1e9)] = Field(
        description="public clipping bound of a record's quantity (tonnes contained)")
    price_max_usd_t: Annotated[float, Field(gt=0, le=1e9)] = 200_000.0
    rows_per_unit: Annotated[int, Field(ge=1, le=100)] = 4
    min_contributors: Annotated[int, Field(ge=3, le=1000)] = 3
    purpose: Annotated[str, Field(min_length=3, max_length=500)]

    @field_validator("query_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _QUERY_ID.fullmatch(value):
            raise ValueError("query_id must be 32 lower-case hex digits (uuid4().hex)")
        return value

    def accounting_periods(self) -> list[int]:
        """Calendar years whose budget the release is charged to."""
        return sorted({parse_period(p).year for p in self.periods})


class SyntheticAnswer(BaseModel):
    """A node's synthetic release. Everything in it may leave the node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_id: str
    node_id: str
    kind: Literal["synthetic"] = "synthetic"
    method: str
    columns: list[str]
    rows: list[list[Any]] = Field(description="row-major values in ``columns`` order")
    estimated_records: float = Field(
        description="DP estimate of how many (contribution-bounded) records the rows stand for")
    epsilon: float
    delta: float
    accounting_periods: list[int]
    privacy: dict[str, Any] = Field(description="mechanisms, bounds and privacy unit")
    evaluation: dict[str, Any] = Field(
        description="scores the node owner's policy releases; not DP, never rows")
    coverage: list[CoverageEntry]
    released_at: datetime


class SignedSyntheticAnswer(BaseModel):
    """A :class:`SyntheticAnswer` with the node's Ed25519 signature over its canonical JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: SyntheticAnswer
    signature: str
    key_id: str
    receipt: Receipt | None = Field(
        default=None, description="the node's signed ledger receipt of this release")
