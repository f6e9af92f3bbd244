"""Company concentration (HHI by company) from two live secure-aggregation rounds: a secure
sum and a secure sum of squares over four node agents on the real pull transport, each node
one company with known bounded totals; the HHI comes from the two pooled sums only."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import node
from coordinator import (
    SQUARES_PURPOSE,
    company_concentration,
    secure_query_status,
)
from coordinator._receipts import node_receipts
from protocols import (
    SECAGG_MECHANISM,
    SECAGG_SQUARES_MECHANISM,
    AggregateQuery,
    CoverageEntry,
    SecAggConfig,
    SecureAggregateQuery,
    plan_secagg_round,
    squares_encoding,
)
from tests.integration.test_secure_pull import URL, Pool, _dump, _run, enrolled_pool
from tests.unit.node.conftest import make_record

COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"], flows=["production"],
                          countries=["COD", "ZMB"])]
SITE_T = 500.0  # every site (privacy unit) reports one record of 500 t
#: Sites per node (company) and country: COD totals 40,000 / 30,000 / 20,000 / 10,000 t,
#: ZMB totals 20,000 / 20,000 / 15,000 / 5,000 t.
SITES = {"COD": [80, 60, 40, 20], "ZMB": [40, 40, 30, 10]}
CLIP = 50_000.0  # t: above every company's cell total, so nothing is clipped
BOUND = 500.0  # unit_sum_bound: one site-year's tonnes


def totals(country: str) -> list[float]:
    return [sites * SITE_T for sites in SITES[country]]


def true_hhi(country: str) -> float:
    x = totals(country)
    return sum(v * v for v in x) / sum(x) ** 2


def company_records(index: int) -> list[dict[str, Any]]:
    return [make_record(f"r{index}-{country}-{site}", country=country, period="2024-03",
                        quantity_t=SITE_T, unit=f"site:{index}-{country}-{site}")
            for country, sites in SITES.items() for site in range(sites[index])]


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    yield from enrolled_pool(tmp_path, port=8797, prefix="company", records=company_records)


def query(**overrides: Any) -> AggregateQuery:
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country"], "epsilon": 1.0,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": BOUND},
        "purpose": "company concentration test"}
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


def body(secure: SecureAggregateQuery) -> dict[str, Any]:
    return {"query": secure.model_dump(mode="json")}


def test_company_hhi_from_a_secure_sum_and_a_secure_sum_of_squares(pool: Pool) -> None:
    sums = SecureAggregateQuery(query=query(), clip=CLIP)
    squares = SecureAggregateQuery(query=query(), clip=CLIP, statistic="sum_of_squares")
    first = asyncio.run(_run(pool, body(sums)))
    second = asyncio.run(_run(pool, body(squares)))
    everyone = [f"company-{i}" for i in range(4)]
    for status in (first, second):
        assert status["status"] == "completed", status
        assert status["sum_survivors"] == status["dominance_survivors"] == everyone
        assert [c["status"] for c in status["cells"]] == ["published", "published"]
    assert (first["statistic"], second["statistic"]) == ("sum", "sum_of_squares")

    # The squares round: kilogram^2 scale (10^6 per t^2), sensitivity min(2 B C, d C^2)
    # = min(2 * 500 * 50,000, 2 * 50,000^2) = 5e7 t^2 -> 5e13 units, + 1 per cell (floor).
    config = pool.rounds.rounds[squares.query.query_id].config
    assert config.scale == 10**6
    assert config.l1_sensitivity == config.l2_sensitivity == 5 * 10**13 + 2
    assert config.l1_sensitivity == squares_encoding(squares, scale=10**6).l1_sensitivity
    # Its noise std: central sigma at epsilon 1 (4.53 x sensitivity) x sqrt(4/3), in t^2.
    assert 4.5 * 5e7 * math.sqrt(4 / 3) < second["noise_std"] < 4.7 * 5e7 * math.sqrt(4 / 3)

    # Each pooled statistic is near its truth (5 noise std).
    for index, country in enumerate(("COD", "ZMB")):
        s1, s2 = first["cells"][index], second["cells"][index]
        assert s1["key"] == s2["key"] == [country]
        assert abs(s1["value"] - sum(totals(country))) < 5 * s1["std"]
        assert abs(s2["value"] - sum(v * v for v in totals(country))) < 5 * s2["std"]

    # Company HHI per cell, within its error bar of the true HHI.
    rounds = pool.rounds
    result = company_concentration(
        secure_query_status(rounds, query_id=sums.query.query_id),
        secure_query_status(rounds, query_id=squares.query.query_id))
    print()
    for cell, s1, s2 in zip(result, first["cells"], second["cells"], strict=True):
        country = cell.key[0]
        truth = true_hhi(country)
        assert cell.hhi is not None and cell.hhi.std is not None and cell.hhi.ci95 is not None
        # delta method: Var = (sd2 / S1^2)^2 + (2 S2 sd1 / S1^3)^2 at the estimates
        delta = math.hypot(s2["std"] / s1["value"] ** 2,
                           2 * s2["value"] * s1["std"] / s1["value"] ** 3)
        assert 0.85 * delta < cell.hhi.std < 1.15 * delta
        assert 1 / 4 <= cell.hhi.value <= 1
        assert abs(cell.hhi.value - truth) <= 4 * cell.hhi.std, (country, cell, truth)
        print(f"{country}: company HHI {cell.hhi.value:.4f} (raw {cell.hhi.raw:.4f}, clamped "
              f"{cell.hhi.clamped}), true {truth:.4f}, std {cell.hhi.std:.4f}, ci95 "
              f"{cell.hhi.ci95:.4f}; delta-method std {delta:.4f}")

    # Each node's ledger shows both rounds, charged in rho as planned.
    rho_sum = rounds.rounds[sums.query.query_id].config.released_rho()
    rho_squares = config.released_rho()
    for context in pool.nodes:
        entries = node.ledger_entries(engine=context.engine)
        assert [(e.query_id, e.kind, e.mechanism) for e in entries] == [
            (sums.query.query_id, "secure_aggregate", SECAGG_MECHANISM),
            (squares.query.query_id, "secure_aggregate", SECAGG_SQUARES_MECHANISM)]
        assert [e.cost.rho for e in entries] == [pytest.approx(rho_sum),
                                                 pytest.approx(rho_squares)]
        assert entries[1].query["secure_query"]["statistic"] == "sum_of_squares"
    receipts = node_receipts(engine=pool.hub.engine)
    assert sorted((r.query_id, r.node_id) for r in receipts) == sorted(
        (q, n) for q in (sums.query.query_id, squares.query.query_id) for n in everyone)

    # The history says what the squares round's cells are; no company's value or square
    # is stored by the coordinator.
    with TestClient(pool.app, base_url=URL) as http:
        stored = http.get(f"/v1/queries/{squares.query.query_id}",
                          headers=pool.operator).json()
    assert stored["query"]["purpose"].startswith(SQUARES_PURPOSE)
    dump = _dump(pool)
    for country in ("COD", "ZMB"):
        for value in totals(country):
            for number in (value, value * value, value * value * 10**6):
                # the number as stored, not as a digit run inside another number
                pattern = rf"(?<![\d.]){int(number)}(\.0+)?(?![\d.])"
                assert re.search(pattern, dump) is None, (country, value, number)
    # (the pattern finds a number that is stored: the query's public unit_sum_bound)
    assert re.search(rf"(?<![\d.]){int(BOUND)}(\.0+)?(?![\d.])", dump) is not None

    # Two sums of the wrong kinds, or swapped, are refused.
    with pytest.raises(ValueError, match="'sum' round and a 'sum_of_squares' round"):
        company_concentration(secure_query_status(rounds, query_id=squares.query.query_id),
                              secure_query_status(rounds, query_id=sums.query.query_id))

    # The same through the API, as the CLI and the auditor read it.
    with TestClient(pool.app, base_url=URL) as http:
        shown = http.get("/v1/company-concentration", headers=pool.operator, params={
            "sums": sums.query.query_id, "squares": squares.query.query_id})
        swapped = http.get("/v1/company-concentration", headers=pool.operator, params={
            "sums": squares.query.query_id, "squares": sums.query.query_id})
    assert shown.status_code == 200, shown.text
    assert [c["hhi"]["value"] for c in shown.json()] == pytest.approx(
        [c.hhi.value for c in result if c.hhi is not None])
    assert swapped.status_code == 409 and swapped.json()["error"] == "incompatible_rounds"


def test_a_node_refuses_a_squares_round_with_too_little_noise(pool: Pool) -> None:
    """The node recomputes the squares' sensitivity and scale: a round planned with less
    noise, or at the sums' scale, is refused."""
    squares = SecureAggregateQuery(query=query(), clip=CLIP, statistic="sum_of_squares")
    needed = squares_encoding(squares, scale=10**6)

    def plan(sensitivity: int, scale: int = 10**6) -> SecAggConfig:
        return plan_secagg_round(
            node_ids=[c.settings.node_id for c in pool.nodes], cells=2, clip=needed.clip,
            l1_sensitivity=sensitivity, scale=scale, rho=squares.target_rho(),
            round_id=squares.query.query_id)

    with pytest.raises(node.QueryRefusedError, match="noise would be too small"):
        node.check_secure_query(pool.nodes[0], squares, plan(needed.l1_sensitivity // 2))
    with pytest.raises(node.QueryRefusedError, match="scale 10000000 of a sum of squares"):
        node.check_secure_query(pool.nodes[0], squares, plan(needed.l1_sensitivity, 10**7))
    assert node.check_secure_query(pool.nodes[0], squares, plan(needed.l1_sensitivity)) > 0
