"""The reporting record: field parsing and every cross-field rule of its docstring."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from protocols import Basis, Commodity, ContractType, Flow, ReportingRecord, Stage

_DROP = object()


def _production(**changes: Any) -> dict[str, Any]:
    """A valid mine production record (gross weight and grade), with changes applied."""
    row: dict[str, Any] = {
        "record_id": "prod-2024-07-001",
        "period": "2024-07",
        "commodity": "cobalt",
        "stage": "mining",
        "flow": "production",
        "country": "COD",
        "quantity": 1000.0,
        "unit": "t",
        "basis": "gross",
        "grade": 0.06,
        "site_id": "mine-kolwezi-1",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not _DROP}


def _export(**changes: Any) -> dict[str, Any]:
    """A valid export shipment (contained tonnes, partner country), with changes applied."""
    row: dict[str, Any] = {
        "record_id": "exp-1", "flow": "export", "partner_country": "CHN", "site_id": _DROP,
        "basis": "contained", "grade": _DROP, "quantity": 250.0,
    }
    row.update(changes)
    return _production(**row)


def _price(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "record_id": "price-1",
        "period": "2024-Q3",
        "commodity": "lithium",
        "stage": "refining",
        "flow": "price",
        "country": "CHL",
        "price": 12.5,
        "price_unit": "USD/kg",
        "contract_type": "long_term",
        "contract_id": "offtake-2021-07",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not _DROP}


def _error(row: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """The (location, message) of the single validation error ``row`` raises."""
    with pytest.raises(ValidationError) as exc_info:
        ReportingRecord(**row)
    errors = exc_info.value.errors()
    assert len(errors) == 1, errors
    return tuple(errors[0]["loc"]), errors[0]["msg"]


def test_valid_production_record_is_parsed() -> None:
    record = ReportingRecord(**_production(commodity="Cobalt", stage="MINING", country="cod"))
    assert record.commodity is Commodity.COBALT
    assert record.stage is Stage.MINING
    assert record.flow is Flow.PRODUCTION
    assert record.country == "COD"
    assert record.period == "2024-07"
    assert record.basis is Basis.GROSS
    assert record.partner_country is None
    assert record.price is None


def test_period_is_stored_in_canonical_form() -> None:
    assert ReportingRecord(**_production(period="2024-07-15")).period == "2024-07"
    assert ReportingRecord(**_production(period="2024-q3")).period == "2024-Q3"
    assert ReportingRecord(**_production(period=2024)).period == "2024"
    assert ReportingRecord(**_production(period=2024.0)).period == "2024"


def test_blank_and_nan_optional_cells_are_empty() -> None:
    record = ReportingRecord(
        **_production(partner_country="", contract_id="  ", price=math.nan, price_unit=None)
    )
    assert record.partner_country is None
    assert record.contract_id is None
    assert record.price is None


def test_strings_are_stripped() -> None:
    record = ReportingRecord(**_production(record_id="  r-1  ", unit=" kg "))
    assert record.record_id == "r-1"
    assert record.unit == "kg"


# --- partner country -------------------------------------------------------------------


def test_export_with_partner_country_is_valid() -> None:
    record = ReportingRecord(**_export(partner_country="chn"))
    assert record.flow is Flow.EXPORT
    assert record.partner_country == "CHN"


@pytest.mark.parametrize("flow", ["import", "export"])
def test_trade_flow_needs_partner_country(flow: str) -> None:
    assert _error(_export(flow=flow, partner_country=_DROP)) == (
        (), f"Value error, partner_country: required for the {flow} flow"
    )


def test_blank_partner_country_counts_as_missing() -> None:
    assert _error(_export(partner_country=" ")) == (
        (), "Value error, partner_country: required for the export flow"
    )


@pytest.mark.parametrize("flow", ["production", "consumption", "waste", "recycling_input"])
def test_non_trade_flow_must_not_have_partner_country(flow: str) -> None:
    assert _error(_production(flow=flow, partner_country="CHN")) == (
        (), f"Value error, partner_country: only import and export have one, not {flow}"
    )


def test_partner_country_must_be_alpha3() -> None:
    loc, msg = _error(_export(partner_country="CN"))
    assert loc == ("partner_country",)
    # The location names the field (the message text says "country" for either field).
    assert msg.endswith(
        "'CN' is not an ISO 3166-1 alpha-3 code (use alpha-3, e.g. COD, not alpha-2)"
    )


# --- price flow ------------------------------------------------------------------------


def test_valid_price_record() -> None:
    record = ReportingRecord(**_price())
    assert record.contract_type is ContractType.LONG_TERM
    assert record.quantity is None
    assert record.quantity_t is None
    assert record.price_usd_t == 12_500.0


@pytest.mark.parametrize("name", ["price", "price_unit", "contract_type"])
def test_price_flow_needs_price_price_unit_and_contract_type(name: str) -> None:
    assert _error(_price(**{name: _DROP})) == (
        (), f"Value error, {name}: required for the price flow"
    )


def test_price_must_be_positive() -> None:
    assert _error(_price(price=-10.0)) == ((), "Value error, price -10.0 is not positive")


def test_price_unit_must_be_known() -> None:
    assert _error(_price(price_unit="EUR/t")) == (
        (), "Value error, price unit 'EUR/t' is not supported (allowed: USD/t, USD/kg, USD/lb)"
    )


def test_contract_type_must_be_known() -> None:
    loc, msg = _error(_price(contract_type="forward"))
    assert loc == ("contract_type",)
    assert "contract_type 'forward' is not a known code (allowed: spot, long_term)" in msg


def test_contract_type_is_parsed_like_the_other_codes() -> None:
    assert ReportingRecord(**_price(contract_type="Long-Term")).contract_type == "long_term"


def test_price_record_may_carry_a_contract_volume() -> None:
    record = ReportingRecord(**_price(quantity=5.0, unit="kt", basis="contained"))
    assert record.quantity_t == 5000.0


def test_price_record_quantity_without_unit_is_refused() -> None:
    with pytest.raises(ValidationError):
        ReportingRecord(**_price(quantity=5.0))


# --- quantity flows --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quantity", "unit", "basis"])
@pytest.mark.parametrize("flow", ["production", "consumption", "waste"])
def test_non_price_flow_needs_quantity_unit_and_basis(flow: str, name: str) -> None:
    assert _error(_production(flow=flow, **{name: _DROP})) == (
        (), f"Value error, {name}: required for the {flow} flow"
    )


def test_nan_quantity_from_a_spreadsheet_counts_as_missing() -> None:
    assert _error(_production(quantity=math.nan)) == (
        (), "Value error, quantity: required for the production flow"
    )


def test_negative_quantity_is_refused() -> None:
    assert _error(_production(quantity=-1.0)) == ((), "Value error, quantity -1.0 is negative")


def test_infinite_quantity_is_refused() -> None:
    assert _error(_production(quantity="inf")) == (
        (), "Value error, quantity inf is not a finite number"
    )


def test_unknown_unit_is_refused() -> None:
    loc, msg = _error(_production(unit="oz"))
    assert loc == ()
    assert msg.startswith("Value error, unit 'oz' is not a mass unit")


def test_price_on_a_quantity_flow_needs_a_valid_price_unit() -> None:
    assert _error(_production(price=10.0)) == (
        (), "Value error, price unit '' is not supported (allowed: USD/t, USD/kg, USD/lb)"
    )
    record = ReportingRecord(**_production(price=10.0, price_unit="USD/t"))
    assert record.price_usd_t == 10.0


# --- grade -----------------------------------------------------------------------------


def test_gross_quantity_needs_grade() -> None:
    assert _error(_production(grade=_DROP)) == (
        (), "Value error, grade is required when basis is gross"
    )


def test_contained_quantity_must_not_have_grade() -> None:
    assert _error(_production(basis="contained")) == (
        (), "Value error, grade must be empty when basis is contained"
    )


@pytest.mark.parametrize("grade", [0.0, 1.5, 6.0])
def test_grade_must_be_a_mass_fraction(grade: float) -> None:
    assert _error(_production(grade=grade)) == (
        (), f"Value error, grade {grade} is not a mass fraction in (0, 1]"
    )


# --- stock level -----------------------------------------------------------------------


def test_stock_level_needs_site_id() -> None:
    assert _error(_production(flow="stock_level", site_id=_DROP)) == (
        (), "Value error, site_id: required for stock levels (closing stock is per site)"
    )


def test_stock_level_with_site_id_is_valid() -> None:
    record = ReportingRecord(**_production(flow="stock_level", stage="refining"))
    assert record.flow is Flow.STOCK_LEVEL
    assert record.site_id == "mine-kolwezi-1"


# --- field-level errors name their field ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("commodity", "unobtainium",
         "Value error, commodity 'unobtainium' is not a known code (allowed: cobalt, lithium, "
         "natural_graphite, nickel, rare_earths, tellurium, copper, manganese)"),
        ("stage", "smelting",
         "Value error, stage 'smelting' is not a known code "
         "(allowed: mining, refining, manufacturing, use, end_of_life)"),
        ("flow", "shipment",
         "Value error, flow 'shipment' is not a known code (allowed: production, import, "
         "export, consumption, stock_level, recycling_input, waste, price)"),
        ("basis", "wet",
         "Value error, basis 'wet' is not a known code (allowed: contained, gross)"),
        ("country", "CD",
         "Value error, country 'CD' is not an ISO 3166-1 alpha-3 code "
         "(use alpha-3, e.g. COD, not alpha-2)"),
        ("period", "2024-13",
         "Value error, period '2024-13' is not a period (expected YYYY, YYYY-Qn or YYYY-MM)"),
    ],
)
def test_field_errors_name_the_field(field: str, value: str, message: str) -> None:
    assert _error(_production(**{field: value})) == ((field,), message)


@pytest.mark.parametrize("record_id", ["", "has space", "semi;colon", "x" * 129])
def test_record_id_format(record_id: str) -> None:
    loc, _ = _error(_production(record_id=record_id))
    assert loc == ("record_id",)


def test_record_id_allows_common_separators() -> None:
    record = ReportingRecord(**_production(record_id="ERP:2024/07#12@site+a-b.c_d"))
    assert record.record_id == "ERP:2024/07#12@site+a-b.c_d"


def test_unknown_columns_are_refused() -> None:
    assert _error(_production(tonnage=5)) == (("tonnage",), "Extra inputs are not permitted")


def test_records_are_frozen() -> None:
    record = ReportingRecord(**_production())
    with pytest.raises(ValidationError):
        record.quantity = 5.0


# --- derived values --------------------------------------------------------------------


def test_quantity_t_of_gross_weight_and_grade() -> None:
    assert ReportingRecord(**_production()).quantity_t == pytest.approx(60.0, rel=1e-12)


def test_quantity_t_of_a_contained_quantity_in_kg() -> None:
    record = ReportingRecord(**_production(quantity=2500.0, unit="kg", basis="contained",
                                           grade=_DROP))
    assert record.quantity_t == 2.5


def test_price_usd_t_from_usd_per_lb() -> None:
    record = ReportingRecord(**_price(price=15.0, price_unit="USD/lb"))
    assert record.price_usd_t == pytest.approx(33_069.339327731635, rel=1e-12)


def test_contribution_unit_is_site_then_contract_then_record() -> None:
    both = ReportingRecord(**_production(contract_id="c-9"))
    assert both.contribution_unit == "site:mine-kolwezi-1"
    contract = ReportingRecord(**_price())
    assert contract.contribution_unit == "contract:offtake-2021-07"
    alone = ReportingRecord(**_export())
    assert alone.contribution_unit == "record:exp-1"
