"""Wire models of API v1: query validation, the public key order, JSON round trips."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from protocols import (
    API_VERSION,
    MAX_CELLS,
    AggregateQuery,
    Bounds,
    CoverageEntry,
    Dimension,
    Measure,
    NodeAnswer,
    QueryKind,
    SignedAnswer,
    Stage,
    all_country_codes,
    canonical_json,
    generate_private_key,
    key_id,
    public_key_b64,
    sign,
    verify,
)

QUERY_ID = "0123456789abcdef0123456789abcdef"


def _query(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "query_id": QUERY_ID,
        "kind": "sum",
        "commodities": ["cobalt"],
        "flows": ["production"],
        "periods": ["2024"],
        "epsilon": 1.0,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 5000.0},
        "purpose": "unit test",
    }
    row.update(changes)
    return row


def _error(row: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as exc_info:
        AggregateQuery(**row)
    errors = exc_info.value.errors()
    assert len(errors) == 1, errors
    return tuple(errors[0]["loc"]), errors[0]["msg"]


def test_api_version_and_cell_cap() -> None:
    assert API_VERSION == "v1"
    assert MAX_CELLS == 100_000


def test_minimal_query_defaults() -> None:
    query = AggregateQuery(**_query())
    assert query.kind is QueryKind.SUM
    assert query.measure is Measure.QUANTITY
    assert query.group_by == []
    assert query.stages is None
    assert query.countries is None
    assert query.min_contributors == 3
    assert query.bounds == Bounds(record_clip=1000.0, unit_sum_bound=5000.0, unit_record_bound=12)
    assert query.public_keys() == [()]
    assert query.cell_count() == 1


# --- query id --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query_id",
    [QUERY_ID.upper(), QUERY_ID[:-1], QUERY_ID + "0", "0123456789abcdef-0123456789abcdef",
     "g" * 32, ""],
)
def test_query_id_must_be_32_lower_case_hex_digits(query_id: str) -> None:
    assert _error(_query(query_id=query_id)) == (
        ("query_id",), "Value error, query_id must be 32 lower-case hex digits (uuid4().hex)"
    )


# --- shape rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("commodities", ["cobalt", "cobalt"]),
        ("flows", ["production", "production"]),
        ("stages", ["mining", "mining"]),
        ("countries", ["cod", "COD"]),
        ("partner_countries", ["CHN", "chn"]),
        ("group_by", ["commodity", "commodity"]),
        ("periods", ["2024-07", "2024-07-15"]),
    ],
)
def test_duplicates_are_refused_after_canonicalisation(field: str, values: list[str]) -> None:
    assert _error(_query(**{field: values})) == ((), f"Value error, {field}: contains duplicates")


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        (["2024", "2024-Q1"], "periods: 2024 and 2024-Q1 overlap"),
        (["2024-Q1", "2024-03"], "periods: 2024-Q1 and 2024-03 overlap"),
        (["2023", "2024-Q2", "2024-05"], "periods: 2024-Q2 and 2024-05 overlap"),
    ],
)
def test_overlapping_periods_are_refused(periods: list[str], message: str) -> None:
    assert _error(_query(periods=periods)) == ((), f"Value error, {message}")


def test_adjacent_periods_of_mixed_granularity_are_accepted() -> None:
    query = AggregateQuery(**_query(periods=["2023", "2024-Q1", "2024-04", "2024-05"]))
    assert query.periods == ["2023", "2024-Q1", "2024-04", "2024-05"]


def test_periods_are_canonicalised() -> None:
    query = AggregateQuery(**_query(periods=["2024-q1", "2024-04-30", 2025]))
    assert query.periods == ["2024-Q1", "2024-04", "2025"]


def test_price_measure_on_the_price_flow() -> None:
    query = AggregateQuery(**_query(kind="mean", measure="price_usd_t", flows=["price"]))
    assert query.measure is Measure.PRICE


@pytest.mark.parametrize("flows", [["production"], ["price", "production"]])
def test_price_measure_only_on_the_price_flow(flows: list[str]) -> None:
    assert _error(_query(measure="price_usd_t", flows=flows)) == (
        (), "Value error, flows: the price measure is only defined on the price flow"
    )


@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_quantity_sums_refuse_the_price_flow(kind: str) -> None:
    assert _error(_query(kind=kind, flows=["production", "price"])) == (
        (), "Value error, flows: use measure price_usd_t for the price flow"
    )


def test_price_records_may_be_counted() -> None:
    query = AggregateQuery(**_query(kind="count", flows=["price"]))
    assert query.kind is QueryKind.COUNT


@pytest.mark.parametrize("flows", [["production"], ["import", "production"]])
def test_partner_country_grouping_only_for_trade_flows(flows: list[str]) -> None:
    assert _error(_query(flows=flows, group_by=["partner_country"])) == (
        (), "Value error, group_by: partner_country applies to import and export flows only"
    )


def test_partner_country_grouping_on_trade_flows() -> None:
    query = AggregateQuery(
        **_query(flows=["import", "export"], group_by=["flow", "partner_country"],
                 partner_countries=["CHN", "JPN"])
    )
    assert query.public_keys() == [
        ("import", "CHN"), ("import", "JPN"), ("export", "CHN"), ("export", "JPN"),
    ]


def test_cell_cap_refuses_too_many_cells() -> None:
    row = _query(flows=["import", "export"], group_by=["flow", "country", "partner_country"])
    assert _error(row) == (
        (), f"Value error, group_by: {2 * 249 * 249} cells exceed the limit 100000"
    )


def _months(n: int) -> list[str]:
    return [f"{1990 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]


def test_cell_cap_boundary() -> None:
    countries = list(all_country_codes())
    at_cap = _query(group_by=["country", "period"], countries=countries[:200],
                    periods=_months(500))
    assert AggregateQuery(**at_cap).cell_count() == MAX_CELLS
    over = {**at_cap, "countries": countries[:201]}
    assert _error(over) == ((), "Value error, group_by: 100500 cells exceed the limit 100000")


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"epsilon": 0.0}, ("epsilon",)),
        ({"epsilon": 10.01}, ("epsilon",)),
        ({"min_contributors": 2}, ("min_contributors",)),
        ({"purpose": "ab"}, ("purpose",)),
        ({"commodities": []}, ("commodities",)),
        ({"flows": []}, ("flows",)),
        ({"periods": []}, ("periods",)),
        ({"bounds": {"record_clip": 0.0, "unit_sum_bound": 1.0}}, ("bounds", "record_clip")),
        ({"bounds": {"record_clip": 1.0, "unit_sum_bound": -1.0}},
         ("bounds", "unit_sum_bound")),
        ({"bounds": {"record_clip": 1.0, "unit_sum_bound": 1.0, "unit_record_bound": 0}},
         ("bounds", "unit_record_bound")),
        ({"countries": ["DE"]}, ("countries", 0)),
        ({"surprise": 1}, ("surprise",)),
    ],
)
def test_field_ranges(changes: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert _error(_query(**changes))[0] == loc


def test_epsilon_ten_is_allowed() -> None:
    assert AggregateQuery(**_query(epsilon=10.0)).epsilon == 10.0


# --- public keys -----------------------------------------------------------------------


def test_public_keys_follow_itertools_product_of_the_domains() -> None:
    query = AggregateQuery(
        **_query(
            commodities=["nickel", "cobalt"],
            flows=["production", "consumption"],
            periods=["2024-Q2", "2024-Q1"],
            countries=["IDN", "AUS", "PHL"],
            group_by=["period", "country", "commodity"],
        )
    )
    expected = list(
        itertools.product(["2024-Q2", "2024-Q1"], ["IDN", "AUS", "PHL"], ["nickel", "cobalt"])
    )
    assert query.public_keys() == expected
    assert query.public_keys()[:3] == [
        ("2024-Q2", "IDN", "nickel"), ("2024-Q2", "IDN", "cobalt"), ("2024-Q2", "AUS", "nickel"),
    ]
    assert query.cell_count() == 12


def test_default_domains_are_every_stage_and_every_country() -> None:
    query = AggregateQuery(**_query(group_by=["stage", "country"]))
    assert query.domain(Dimension.STAGE) == [s.value for s in Stage]
    assert query.domain(Dimension.COUNTRY) == list(all_country_codes())
    assert query.cell_count() == 5 * 249
    keys = query.public_keys()
    assert len(keys) == query.cell_count()
    assert keys[0] == ("mining", "ABW")
    assert keys[-1] == ("end_of_life", "ZWE")


def test_accounting_periods_are_the_sorted_calendar_years() -> None:
    query = AggregateQuery(**_query(periods=["2025", "2023-12", "2024-Q1", "2024-Q2"]))
    assert query.accounting_periods() == [2023, 2024, 2025]


def test_cell_slice_of_a_grouped_cell() -> None:
    query = AggregateQuery(
        **_query(commodities=["cobalt", "nickel"], group_by=["commodity", "country"],
                 countries=["COD", "IDN"])
    )
    assert query.cell_slice(("nickel", "IDN")) == {
        "commodities": ["nickel"],
        "stages": [s.value for s in Stage],
        "flows": ["production"],
        "countries": ["IDN"],
    }
    ungrouped = AggregateQuery(**_query())
    assert ungrouped.cell_slice(()) == {
        "commodities": ["cobalt"],
        "stages": [s.value for s in Stage],
        "flows": ["production"],
        "countries": None,
    }


def test_query_json_round_trip() -> None:
    query = AggregateQuery(
        **_query(group_by=["commodity", "period"], periods=["2024-Q1", "2024-Q2"],
                 countries=["COD"])
    )
    again = AggregateQuery.model_validate_json(query.model_dump_json())
    assert again == query
    assert canonical_json(again.model_dump(mode="json")) == canonical_json(
        query.model_dump(mode="json")
    )


# --- answers ---------------------------------------------------------------------------


def _answer(**changes: Any) -> NodeAnswer:
    row: dict[str, Any] = {
        "query_id": QUERY_ID,
        "node_id": "node-acme",
        "kind": "mean",
        "measure": "quantity_t",
        "group_by": ["commodity"],
        "sums": [1234.567, -3.25],
        "counts": [17.0, 0.0],
        "sum_scale": 2.5,
        "count_scale": 24.0,
        "epsilon": 1.0,
        "accounting_periods": [2024],
        "mechanism": "discrete Laplace",
        "privacy_unit": "site-year",
        "coverage": [
            CoverageEntry.model_validate(
                {"commodity": "cobalt", "stages": ["mining"], "flows": ["production"],
                 "countries": ["cod"]}
            ),
        ],
        "released_at": datetime(2024, 6, 1, 12, 30, 15, 123456, tzinfo=UTC),
    }
    row.update(changes)
    return NodeAnswer(**row)


def test_answer_figures_are_floats() -> None:
    answer = _answer(sums=[5, 1], counts=[3, 0])
    assert answer.counts == [3.0, 0.0]
    assert answer.sums == [5.0, 1.0] and all(isinstance(v, float) for v in answer.sums)


@pytest.mark.parametrize(
    "released_at",
    [
        datetime(2024, 6, 1, 12, 30, 15, 123456, tzinfo=UTC),
        datetime(2024, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 6, 1, 12, 0),
    ],
)
def test_node_answer_json_round_trip(released_at: datetime) -> None:
    answer = _answer(released_at=released_at)
    again = NodeAnswer.model_validate_json(answer.model_dump_json())
    assert again == answer
    assert again.released_at == released_at
    assert again.coverage[0].countries == ["COD"]
    assert canonical_json(again.model_dump(mode="json")) == canonical_json(
        answer.model_dump(mode="json")
    )


def test_signed_answer_json_round_trip_still_verifies() -> None:
    key = generate_private_key()
    public = public_key_b64(key)
    answer = _answer()
    signed = SignedAnswer(
        answer=answer, signature=sign(key, answer.model_dump(mode="json")), key_id=key_id(public)
    )
    wire = signed.model_dump_json()
    again = SignedAnswer.model_validate_json(wire)
    assert again == signed
    assert json.loads(wire)["answer"]["released_at"] == "2024-06-01T12:30:15.123456Z"
    verify(public, again.answer.model_dump(mode="json"), again.signature)


def test_answers_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        SignedAnswer.model_validate({"answer": _answer().model_dump(), "signature": "x",
                                     "key_id": "y", "extra": 1})
