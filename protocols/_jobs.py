"""Jobs of the pull protocol: what the coordinator queues for a node and what comes back.

Each model is the ``body`` of a :class:`~protocols.SignedEnvelope` of one
:class:`~protocols.MessageKind`. A job moves through :class:`JobState` on both sides; its id
makes redelivery, a retried post or a restart harmless (a node answers a job id once; the
coordinator counts a job's result once).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from protocols._synthetic import SignedSyntheticAnswer, SyntheticQuery
from protocols._wire import AggregateQuery, SignedAnswer

__all__ = [
    "FINAL_JOB_STATES",
    "AnyAnswer",
    "AnyQuery",
    "DataTier",
    "EnrolBody",
    "EnrolledBody",
    "JobSpec",
    "JobState",
    "PollBody",
    "RefusalBody",
    "ResultBody",
    "RotateKeyBody",
    "StatusBody",
    "parse_answer",
    "parse_query",
]

_HEX32 = r"^[0-9a-f]{32}$"


#: Any query a job can carry, and any signed answer to one.
AnyQuery = AggregateQuery | SyntheticQuery
AnyAnswer = SignedAnswer | SignedSyntheticAnswer
_QUERIES: TypeAdapter[AnyQuery] = TypeAdapter(AnyQuery)
_ANSWERS: TypeAdapter[AnyAnswer] = TypeAdapter(AnyAnswer)


def parse_query(text: str | bytes) -> AnyQuery:
    """An aggregate or synthetic query from its JSON."""
    return _QUERIES.validate_json(text)


def parse_answer(text: str | bytes) -> AnyAnswer:
    """A signed aggregate or synthetic answer from its JSON."""
    return _ANSWERS.validate_json(text)


class JobState(StrEnum):
    """Where a job is. Final states: answered, refused, expired."""

    QUEUED = "queued"  # waiting at the coordinator for the node to poll
    DELIVERED = "delivered"  # handed to the node
    RUNNING = "running"  # the node is computing its answer
    AWAITING_APPROVAL = "awaiting_approval"  # held for a person at the node
    ANSWERED = "answered"
    REFUSED = "refused"
    EXPIRED = "expired"  # the deadline passed first


FINAL_JOB_STATES = frozenset({JobState.ANSWERED, JobState.REFUSED, JobState.EXPIRED})


class DataTier(StrEnum):
    """Data tiers of the pool's terms of reference."""

    STANDARDISED = "standardised"  # aggregates in the standard's code lists
    BULK = "bulk"  # record-level (e.g. synthetic) data


class JobSpec(BaseModel):
    """A job for one node: the query, why it is asked, and by when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: Annotated[str, Field(pattern=_HEX32)]
    query: AggregateQuery | SyntheticQuery
    tier: DataTier = DataTier.STANDARDISED
    requester: Annotated[str, Field(min_length=1, max_length=100)]
    deadline: datetime
    participants: list[str] | None = Field(
        default=None, description="the nodes this query was sent to; nodes apply the "
        "differencing rule (protocols.MIN_SET_DIFFERENCE) to it")


class EnrolBody(BaseModel):
    """A node enrols with a one-time token and its public key (signed with that key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: Annotated[str, Field(min_length=20, max_length=200)]
    node_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    public_key: str


class EnrolledBody(BaseModel):
    """The coordinator's answer to an enrolment: its own key, to pin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    coordinator_public_key: str


class PollBody(BaseModel):
    """A node asks for its next job, waiting at most ``wait_seconds`` (long poll)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wait_seconds: Annotated[float, Field(ge=0, le=60)] = 25.0


class StatusBody(BaseModel):
    """A node reports a job's intermediate state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: Annotated[str, Field(pattern=_HEX32)]
    state: JobState
    message: str | None = None


class ResultBody(BaseModel):
    """A node's answer to a job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: Annotated[str, Field(pattern=_HEX32)]
    answer: SignedAnswer | SignedSyntheticAnswer


class RefusalBody(BaseModel):
    """A node will not answer a job: which rule, and the message for the operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: Annotated[str, Field(pattern=_HEX32)]
    reason: str = Field(description="query_refused | budget_exceeded | denied | failed")
    message: str


class RotateKeyBody(BaseModel):
    """Replace the node's key: sent under the old key, with proof of the new one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    new_public_key: str
    proof: str = Field(description="new key's signature over {node_id, new_public_key}")
