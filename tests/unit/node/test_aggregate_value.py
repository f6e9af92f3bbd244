"""The value measure (price x quantity, for volume-weighted prices), contract-type grouping,
and the balance's world and region total queries, on the node's DP computation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from coordinator import BalanceRequest, balance_queries, total_queries
from node._aggregate import compute_release, exact_cell_values
from protocols import AggregateQuery, CoverageEntry, Measure
from tests.unit.node.conftest import make_record
from tests.unit.node.test_aggregate import frame, kg

PRICE_COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining", "refining"],
                                flows=["price"], countries=["COD", "ZMB", "FIN"])]


def price_record(record_id: str, *, price: float, quantity: float | None, contract: str,
                 unit: str, month: int = 1, country: str = "COD") -> dict[str, Any]:
    row = make_record(record_id, period=f"2024-{month:02d}", flow="price", country=country,
                      quantity_t=quantity if quantity is not None else 0.0, unit=unit)
    row.update(quantity_t=quantity, price_usd_t=price, contract_type=contract)
    return row


def price_query(measure: Measure, **overrides: Any) -> AggregateQuery:
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "measure": measure,
        "commodities": ["cobalt"], "flows": ["price"], "periods": ["2024-01", "2024-02"],
        "group_by": ["contract_type", "period"], "epsilon": 1.0,
        "bounds": {"record_clip": 1e8, "unit_sum_bound": 1e8}, "purpose": "unit test",
    }
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


def test_value_is_price_times_quantity_grouped_by_contract_type_and_period() -> None:
    records = frame([
        price_record("a", price=30_000, quantity=10, contract="spot", unit="contract:1"),
        price_record("b", price=20_000, quantity=40, contract="long_term", unit="contract:2"),
        price_record("c", price=25_000, quantity=20, contract="long_term", unit="contract:2",
                     month=2),
        price_record("d", price=99_000, quantity=None, contract="spot", unit="record:d"),
    ])
    value, _ = exact_cell_values(records, price_query(Measure.VALUE), PRICE_COVERAGE)
    tonnes, _ = exact_cell_values(records, price_query(Measure.QUANTITY), PRICE_COVERAGE)
    # keys: (spot, 01), (spot, 02), (long_term, 01), (long_term, 02); "d" has no quantity,
    # so it is in neither sum and the ratio stays a volume-weighted price
    assert value == [kg(300_000), 0, kg(800_000), kg(500_000)]
    assert tonnes == [kg(10), 0, kg(40), kg(20)]
    assert value is not None and tonnes is not None
    assert (value[2] + value[3]) / (tonnes[2] + tonnes[3]) == pytest.approx(1_300_000 / 60)


def test_a_records_value_is_clipped_and_a_units_value_bounded_in_usd() -> None:
    records = frame([
        price_record("a", price=50_000, quantity=100, contract="spot", unit="contract:big"),
        price_record("b", price=50_000, quantity=100, contract="long_term",
                     unit="contract:big", month=2),
        price_record("c", price=10_000, quantity=1, contract="spot", unit="contract:small"),
    ])
    query = price_query(Measure.VALUE, bounds={"record_clip": 4e6, "unit_sum_bound": 6e6})
    value, _ = exact_cell_values(records, query, PRICE_COVERAGE)
    # each 5e6 record clipped to 4e6; the big unit's 8e6 scaled to 6e6 (3e6 per cell)
    assert value == [kg(3e6) + kg(10_000), 0, 0, kg(3e6)]


_price = st.fixed_dictionaries({
    "unit": st.sampled_from([f"contract:{i}" for i in range(4)] + ["record:z"]),
    "month": st.integers(1, 2),
    "contract": st.sampled_from(["spot", "long_term"]),
    "price": st.floats(1.0, 200_000.0, allow_nan=False),
    "quantity": st.one_of(st.none(), st.floats(0.0, 500.0, allow_nan=False)),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(_price, min_size=1, max_size=25), st.data())
def test_removing_one_unit_changes_the_value_sums_by_at_most_the_unit_bound(
    specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    """The sensitivity claim for the value measure, on neighbouring datasets."""
    rows = [price_record(f"r{i}", price=s["price"], quantity=s["quantity"],
                         contract=s["contract"], unit=s["unit"], month=s["month"])
            for i, s in enumerate(specs)]
    bound = data.draw(st.sampled_from([1e5, 2.5e6, 4e7]))
    query = price_query(Measure.VALUE, bounds={"record_clip": 1e7, "unit_sum_bound": bound})
    full, _ = exact_cell_values(frame(rows), query, PRICE_COVERAGE)
    assert full is not None
    for unit in {r["contribution_unit"] for r in rows}:
        without, _ = exact_cell_values(
            frame([r for r in rows if r["contribution_unit"] != unit]), query, PRICE_COVERAGE)
        assert without is not None
        assert sum(abs(a - b) for a, b in zip(full, without, strict=True)) <= kg(bound)


def test_value_release_noise_scale_is_the_usd_bound_over_epsilon() -> None:
    records = frame([price_record("a", price=30_000, quantity=10, contract="spot",
                                  unit="contract:1")])
    query = price_query(Measure.VALUE, epsilon=0.5,
                        bounds={"record_clip": 1e6, "unit_sum_bound": 2e6})
    release = compute_release(records, query, PRICE_COVERAGE)
    assert release.sum_scale == 4e6 and release.epsilon == 0.5
    assert release.sums is not None and len(release.sums) == 4


@pytest.mark.parametrize(("measure", "fields", "message"), [
    (Measure.VALUE, {"flows": ["production"], "group_by": ["period"]},
     "the value measure is only defined on the price flow"),
    (Measure.QUANTITY, {"flows": ["production"], "group_by": ["contract_type"]},
     "contract_type applies to the price flow only"),
    (Measure.QUANTITY, {"flows": ["price", "production"], "group_by": ["period"]},
     "use measure price_usd_t for the price flow"),
])
def test_the_value_measure_and_contract_grouping_are_for_the_price_flow_only(
    measure: Measure, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        price_query(measure, **fields)
    # priced tonnes alone (the denominator of a volume-weighted price) are allowed
    assert price_query(Measure.QUANTITY).measure is Measure.QUANTITY


def test_world_and_region_total_queries_sum_the_country_cells() -> None:
    """The node answers the balance's total queries: no country grouping, or a filter."""
    records = frame([
        make_record("a", quantity_t=100, unit="site:1"),
        make_record("b", quantity_t=50, unit="site:2", country="ZMB"),
        make_record("c", flow="export", partner="CHN", quantity_t=30, unit="site:1"),
        make_record("d", quantity_t=70, unit="site:3", country="AUS"),
    ])
    coverage = [CoverageEntry(commodity="cobalt", stages=["mining"],
                              flows=["production", "export"], countries=["COD", "ZMB", "AUS"])]
    request = BalanceRequest(commodity="cobalt", period="2024", unit_sum_bound=1000.0,
                             totals="world+regions")
    flows, _ = balance_queries(request)
    world, africa, *_ = total_queries(request)
    by_country, _ = exact_cell_values(records, flows, coverage)
    world_sums, _ = exact_cell_values(records, world, coverage)
    africa_sums, _ = exact_cell_values(records, africa, coverage)
    assert by_country is not None and world_sums is not None and africa_sums is not None
    keys = world.public_keys()
    production = keys.index(("mining", "production"))
    export = keys.index(("mining", "export"))
    assert world_sums[production] == kg(220) and world_sums[export] == kg(30)
    assert africa_sums[production] == kg(150)  # AUS is not in Africa
    assert sum(world_sums) == sum(by_country)  # every cell of the world = its countries
    assert sum(by_country) == kg(250)
