"""Request and response models of the operator and auditor routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from protocols import AggregateQuery, DataTier, SyntheticQuery

__all__ = ["QueryRequest", "QuerySummary", "TokenIssued", "TokenRequest"]


class QueryRequest(BaseModel):
    """Run a pooled query: how many answers it needs, and by when."""

    model_config = ConfigDict(extra="forbid")

    query: AggregateQuery | SyntheticQuery = Field(
        description="an aggregate query, or a synthetic-data query (tier bulk)")
    quorum: Annotated[int, Field(ge=1, le=10_000)] = 3
    deadline_seconds: Annotated[float | None, Field(gt=0, le=7 * 86400)] = None
    tier: DataTier = DataTier.STANDARDISED
    wait_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        default=0.0, description="wait up to this long for the result before answering")


class QuerySummary(BaseModel):
    """One line of the query history."""

    query_id: str
    purpose: str
    requester: str
    tier: str
    status: str
    quorum: int
    created_at: datetime
    deadline: datetime
    finished_at: datetime | None
    error: str | None


class TokenRequest(BaseModel):
    """Ask for a one-time enrolment token."""

    model_config = ConfigDict(extra="forbid")

    node_id: Annotated[str | None, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")] = None
    valid_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 72.0


class TokenIssued(BaseModel):
    """A one-time enrolment token: give it to the node owner over a separate channel."""

    token: str
    node_id: str | None
    expires_at: datetime
