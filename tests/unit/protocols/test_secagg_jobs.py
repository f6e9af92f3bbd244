"""Wire models of secure aggregation over the pull transport (protocols._secagg_jobs)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from protocols import (
    AggregateQuery,
    SecAggJob,
    SecAggReply,
    SecureAggregateQuery,
    zcdp_rho_for_epsilon,
)


def query(**overrides: Any) -> AggregateQuery:
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "group_by": [], "epsilon": 0.5,
        "bounds": {"record_clip": 10.0, "unit_sum_bound": 10.0}, "purpose": "unit test"}
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


def test_a_secure_query_is_a_sum_with_a_rho_target() -> None:
    q = query()
    assert SecureAggregateQuery(query=q).target_rho() == pytest.approx(
        zcdp_rho_for_epsilon(epsilon=0.5, delta=1e-6))
    assert SecureAggregateQuery(query=q, rho=0.01).target_rho() == 0.01
    with pytest.raises(ValidationError, match="must be 'sum'"):
        SecureAggregateQuery(query=query(kind="count"))


def test_a_job_carries_exactly_its_steps_inputs() -> None:
    now = datetime.now(UTC)
    base = {"job_id": "a" * 32, "round_id": "b" * 32, "deadline": now, "round_deadline": now}
    roster = {"round_id": "b" * 32, "advertisements": []}
    assert SecAggJob.model_validate({**base, "stage": "share_keys", "roster": roster}).roster
    with pytest.raises(ValidationError, match=r"carries \['roster'\], not \[\]"):
        SecAggJob.model_validate({**base, "stage": "share_keys"})
    with pytest.raises(ValidationError, match="no step unmask"):
        SecAggJob.model_validate({**base, "stage": "unmask", "roster": roster})
    # key rotations travel with advertise_keys only (where peers' keys are checked)
    with pytest.raises(ValidationError, match="only the advertise_keys step carries key"):
        SecAggJob.model_validate({**base, "stage": "share_keys", "roster": roster,
                                  "key_rotations": {}})


def test_a_reply_carries_one_message_of_its_stage_or_a_refusal() -> None:
    base = {"job_id": "a" * 32, "round_id": "b" * 32, "stage": "share_keys"}
    refusal = {"reason": "budget_exceeded", "message": "no budget"}
    assert SecAggReply.model_validate({**base, "refusal": refusal}).refusal is not None
    with pytest.raises(ValidationError, match="exactly one message"):
        SecAggReply.model_validate(base)
    shares = {"round_id": "b" * 32, "sender": "acme", "shares": []}
    with pytest.raises(ValidationError, match="carries advertisement, not shares"):
        SecAggReply.model_validate({**base, "stage": "advertise_keys", "shares": shares})
