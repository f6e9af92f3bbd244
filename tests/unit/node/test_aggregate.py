"""The DP computation: contribution bounding (the sensitivity argument) and noise scale."""

from __future__ import annotations

import statistics
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from node._aggregate import RECORD_SCHEMA, compute_release, exact_cell_values
from protocols import FIXED_POINT_SCALE, CoverageEntry
from tests.unit.node.conftest import COVERAGE, cobalt_query, make_record


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in RECORD_SCHEMA} for r in rows],
                        schema=RECORD_SCHEMA)


def kg(tonnes: float) -> int:
    return round(tonnes * FIXED_POINT_SCALE)


def test_sums_are_grouped_by_public_keys_in_canonical_order() -> None:
    records = frame([
        make_record("a", quantity_t=100, unit="site:1"),
        make_record("b", quantity_t=50, unit="site:2", country="ZMB"),
        make_record("c", flow="export", partner="CHN", quantity_t=30, unit="site:1"),
    ])
    sums, counts = exact_cell_values(records, cobalt_query(), COVERAGE)
    # keys: (COD, production), (COD, export), (ZMB, production), (ZMB, export)
    assert sums == [kg(100), kg(30), kg(50), 0]
    assert counts is None


def test_each_record_is_clipped_to_record_clip() -> None:
    records = frame([make_record("a", quantity_t=5000, unit="site:1")])
    query = cobalt_query(bounds={"record_clip": 700, "unit_sum_bound": 10_000})
    sums, _ = exact_cell_values(records, query, COVERAGE)
    assert sums == [kg(700), 0, 0, 0]


def test_a_units_total_is_scaled_down_to_the_unit_bound() -> None:
    records = frame([
        make_record("a", quantity_t=900, unit="site:big"),
        make_record("b", flow="export", partner="CHN", quantity_t=600, unit="site:big"),
        make_record("c", quantity_t=100, unit="site:small"),
    ])
    query = cobalt_query(bounds={"record_clip": 1000, "unit_sum_bound": 1000})
    sums, _ = exact_cell_values(records, query, COVERAGE)
    # site:big totals 1500 > 1000: scaled by 2/3 -> 600 and 400; site:small untouched.
    assert sums == [kg(600) + kg(100), kg(400), 0, 0]


def test_records_outside_the_declared_coverage_are_never_used() -> None:
    records = frame([
        make_record("a", quantity_t=100, unit="site:1"),
        make_record("b", quantity_t=100, unit="site:2", commodity="lithium"),
        make_record("c", quantity_t=100, unit="site:3", stage="refining"),
    ])
    query = cobalt_query(commodities=["cobalt", "lithium"], group_by=["country"],
                         stages=["mining", "refining"])
    sums, _ = exact_cell_values(records, query, COVERAGE)
    assert sums == [kg(100), 0]


def test_records_are_assigned_to_the_query_period_containing_them() -> None:
    records = frame([
        make_record("jan", period="2024-01", quantity_t=10, unit="site:1"),
        make_record("q3", period="2024-Q3", quantity_t=20, unit="site:1"),
        make_record("year", period="2024", quantity_t=40, unit="site:2"),  # straddles quarters
        make_record("old", period="2023-12", quantity_t=80, unit="site:3"),
    ])
    query = cobalt_query(periods=["2024-Q1", "2024-Q3"], group_by=["period"],
                         flows=["production"], countries=None)
    sums, _ = exact_cell_values(records, query, COVERAGE)
    assert sums == [kg(10), kg(20)]


def test_only_a_sites_latest_stock_level_counts() -> None:
    records = frame([
        make_record("s-nov", period="2024-11", flow="stock_level", quantity_t=500, unit="site:1"),
        make_record("s-dec", period="2024-12", flow="stock_level", quantity_t=300, unit="site:1"),
        make_record("t-jun", period="2024-06", flow="stock_level", quantity_t=50, unit="site:2"),
    ])
    query = cobalt_query(flows=["stock_level"], group_by=["country"])
    sums, _ = exact_cell_values(records, query, COVERAGE)
    assert sums == [kg(300) + kg(50), 0]


def test_counts_keep_at_most_unit_record_bound_records_per_unit() -> None:
    records = frame([make_record(f"r{i:02d}", period=f"2024-{i + 1:02d}", unit="site:1")
                     for i in range(12)] + [make_record("x", unit="site:2")])
    query = cobalt_query(kind="count", flows=["production"], group_by=["country"],
                         bounds={"record_clip": 1000, "unit_sum_bound": 1000,
                                 "unit_record_bound": 5})
    _, counts = exact_cell_values(records, query, COVERAGE)
    assert counts == [5 + 1, 0]


_units = st.sampled_from([f"site:{i}" for i in range(4)] + ["record:z"])
_record = st.fixed_dictionaries({
    "unit": _units,
    "month": st.integers(1, 12),
    "flow": st.sampled_from(["production", "export", "stock_level"]),
    "country": st.sampled_from(["COD", "ZMB"]),
    "quantity_t": st.floats(0, 5000, allow_nan=False),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(_record, min_size=1, max_size=25), st.data())
def test_removing_one_unit_changes_the_sums_by_at_most_the_unit_bound(
    specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    """The sensitivity claim of node._aggregate, checked on neighbouring datasets."""
    rows = [make_record(f"r{i}", period=f"2024-{s['month']:02d}", flow=s["flow"],
                        country=s["country"], quantity_t=s["quantity_t"], unit=s["unit"],
                        partner="CHN" if s["flow"] == "export" else None)
            for i, s in enumerate(specs)]
    bound = data.draw(st.sampled_from([100.0, 1234.5, 4000.0]))
    query = cobalt_query(flows=["production", "export", "stock_level"],
                         bounds={"record_clip": 3000.0, "unit_sum_bound": bound})
    full, _ = exact_cell_values(frame(rows), query, COVERAGE)
    assert full is not None
    for unit in {r["contribution_unit"] for r in rows}:
        without, _ = exact_cell_values(
            frame([r for r in rows if r["contribution_unit"] != unit]), query, COVERAGE)
        assert without is not None
        assert sum(abs(a - b) for a, b in zip(full, without, strict=True)) <= kg(bound)


def test_release_noise_has_the_stated_scale() -> None:
    """Laplace(b) has mean absolute deviation b: check it over 400 releases of one cell."""
    records = frame([make_record("a", quantity_t=500, unit="site:1")])
    query = cobalt_query(flows=["production"], countries=["COD"], group_by=["country"],
                         bounds={"record_clip": 1000, "unit_sum_bound": 200}, epsilon=0.5)
    deviations = []
    for _ in range(400):
        release = compute_release(records, query, COVERAGE)
        assert release.sum_scale == 400.0  # unit_sum_bound / epsilon
        assert release.epsilon == 0.5
        assert release.sums is not None
        deviations.append(abs(release.sums[0] - 200.0))  # 500 t scaled to the bound 200
    mad = statistics.fmean(deviations)
    # the MAD of 400 draws has standard error b / 20 = 20; allow 6 standard errors (the MAD is
    # Gamma(400, b / 400): outside +-120 with probability 2e-8; +-80 was 9e-5 per run). A
    # wrong scale is still caught: at 2 b or b / 2 the MAD lies within it with p < 1e-12.
    assert abs(mad - 400.0) < 120.0


def test_mean_releases_sum_and_count_at_half_the_epsilon_each() -> None:
    records = frame([make_record("a", quantity_t=500, unit="site:1")])
    query = cobalt_query(kind="mean", flows=["production"], group_by=["country"],
                         bounds={"record_clip": 1000, "unit_sum_bound": 1000,
                                 "unit_record_bound": 2})
    release = compute_release(records, query, COVERAGE)
    assert release.epsilon == 1.0
    assert release.sum_scale == 2000.0  # 1000 / 0.5
    assert release.count_scale == 4.0  # 2 / 0.5
    assert release.sums is not None and release.counts is not None
    assert len(release.sums) == len(release.counts) == 2


def test_empty_coverage_releases_only_noise_around_zero() -> None:
    records = frame([make_record("a", quantity_t=1e6, unit="site:1")])
    no_coverage: list[CoverageEntry] = []
    sums, _ = exact_cell_values(records, cobalt_query(), no_coverage)
    assert sums == [0, 0, 0, 0]


def test_a_query_without_grouping_releases_one_total() -> None:
    """Found by fuzzing: group_by [] used to crash the Polars pipeline (HTTP 500)."""
    records = frame([make_record("a", quantity_t=100, unit="site:1"),
                     make_record("b", quantity_t=50, unit="site:2", country="ZMB")])
    for kind, expected in (("sum", ([kg(150)], None)), ("count", (None, [2]))):
        query = cobalt_query(kind=kind, flows=["production"], group_by=[])
        assert exact_cell_values(records, query, COVERAGE) == expected
        release = compute_release(records, query, COVERAGE)
        assert len((release.sums or release.counts) or []) == 1
