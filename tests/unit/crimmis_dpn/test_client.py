"""The public client: requests, the error hierarchy, frames, and the async client on a real app."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator import Balance, BalanceFigure, BalanceRow, create_app, init_coordinator
from crimmis_dpn.client import (
    FRAME_COLUMNS,
    AsyncClient,
    AuthenticationError,
    Client,
    ConnectError,
    DPNError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    QueryFailedError,
    ServerError,
    balance_frame,
    balance_pandas,
)
from protocols import AggregateQuery


def _figure(value: float | None, status: str = "published") -> BalanceFigure:
    return BalanceFigure(status=status, value=value, std=None if value is None else 10.0,
                         ci95=None if value is None else 19.6)


def _balance() -> Balance:
    figures = {name: _figure(100.0) for name in (
        "production", "exports", "opening_stock", "closing_stock", "stock_change",
        "apparent_consumption")}
    figures.update({name: _figure(None, "not_covered")
                    for name in ("imports", "consumption", "recycling_input", "waste")})
    row = BalanceRow(country="COD", stage="mining", **figures)
    return Balance(commodity="cobalt", period="2024", rows=[row], query_ids=["a", "b"],
                   nodes=[], epsilon_by_node={}, unit_sum_bound=1.0, stock_unit_bound=1.0)


def _query() -> AggregateQuery:
    return AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "epsilon": 0.5,
        "bounds": {"record_clip": 10.0, "unit_sum_bound": 10.0}, "purpose": "testing"})


def _result(query: AggregateQuery, status: str) -> dict[str, Any]:
    return {"query": query.model_dump(mode="json"), "status": status, "cells": [], "nodes": [],
            "created_at": datetime.now(UTC).isoformat(), "error": "too few answers"}


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": f"{code}!", "detail": {}})


def test_balance_requests_carry_the_token_and_parse_the_balance() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_balance().model_dump(mode="json"))

    with Client("http://pool.test/", "secret", transport=httpx.MockTransport(handler)) as dpn:
        balance = dpn.balance("cobalt", "2024", epsilon=0.5, min_contributors=4)
    assert seen[0].url == "http://pool.test/v1/balances"
    assert seen[0].headers["authorization"] == "Bearer secret"
    assert json.loads(seen[0].content) == {"commodity": "cobalt", "period": "2024",
                                           "epsilon": 0.5, "min_contributors": 4,
                                           "purpose": "pooled commodity balance",
                                           "totals": "none"}
    assert balance.rows[0].production.value == 100.0


def test_balance_frames_are_long_with_one_row_per_figure() -> None:
    frame = balance_frame(_balance())
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert frame.height == 10
    production = frame.filter(frame["figure"] == "production").row(0, named=True)
    assert production["value"] == 100.0 and production["ci95"] == 19.6
    assert frame.filter(frame["figure"] == "imports")["value"].to_list() == [None]
    pandas_frame = balance_pandas(_balance())
    assert list(pandas_frame.columns) == list(FRAME_COLUMNS) and len(pandas_frame) == 10


@pytest.mark.parametrize(("status", "code", "error"), [
    (401, "unauthorized", AuthenticationError), (403, "forbidden", ForbiddenError),
    (404, "unknown_query", NotFoundError), (422, "invalid_request", InvalidRequestError),
    (409, "job_conflict", InvalidRequestError), (500, "node_error", ServerError)])
def test_error_statuses_map_to_one_hierarchy(status: int, code: str,
                                             error: type[DPNError]) -> None:
    transport = httpx.MockTransport(lambda _: _error(status, code))
    with Client("http://pool.test", "t", transport=transport) as dpn, \
            pytest.raises(error) as caught:
        dpn.result("abc")
    assert isinstance(caught.value, DPNError)
    assert getattr(caught.value, "code", None) == code
    assert f"HTTP {status}" in str(caught.value)


def test_a_failed_query_raises_unless_unchecked() -> None:
    query = _query()
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=_result(query, "failed")))
    with Client("http://pool.test", "t", transport=transport) as dpn:
        with pytest.raises(QueryFailedError, match="too few answers") as caught:
            dpn.query(query)
        assert caught.value.result.status == "failed"
        assert dpn.query(query, check=False).status == "failed"


def test_an_unreachable_coordinator_says_what_to_check() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client("http://pool.test", "t", transport=httpx.MockTransport(refuse)) as dpn, \
            pytest.raises(ConnectError, match="is it running"):
        dpn.health()


@pytest.mark.asyncio
async def test_the_async_client_reads_a_real_coordinator(tmp_path: Path) -> None:
    context = init_coordinator(home=tmp_path / "pool", port=8799)
    app = create_app(context)
    operator = context.settings.operator_token.get_secret_value()
    auditor = context.settings.auditor_token.get_secret_value()
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://pool.test", operator, transport=transport) as dpn:
        assert await dpn.health() == {"status": "ok"}
        assert await dpn.nodes() == []
        assert await dpn.queries() == []
        with pytest.raises(NotFoundError):
            await dpn.result("0" * 32)
    async with AsyncClient("http://pool.test", auditor, transport=transport) as dpn:
        assert await dpn.nodes() == []
        with pytest.raises(ForbiddenError):
            await dpn.balance("cobalt", "2024")
    async with AsyncClient("http://pool.test", "w" * 40, transport=transport) as dpn:
        with pytest.raises(AuthenticationError):
            await dpn.nodes()
    context.engine.dispose()
