"""Units: quantities to tonnes of contained element, prices to USD per tonne."""

from __future__ import annotations

import math

import pytest

from protocols import (
    MASS_UNITS,
    PRICE_UNITS,
    Basis,
    StandardError,
    UnitConversionError,
    normalise_price,
    normalise_quantity,
)


def test_mass_unit_table() -> None:
    assert MASS_UNITS == {
        "t": 1.0,
        "tonne": 1.0,
        "tonnes": 1.0,
        "kg": 0.001,
        "g": 0.000001,
        "kt": 1000.0,
        "lb": 0.00045359237,  # the international avoirdupois pound, exactly
        "short_ton": 0.90718474,  # 2000 lb
        "long_ton": 1.0160469088,  # 2240 lb
    }


@pytest.mark.parametrize(
    ("quantity", "unit", "tonnes"),
    [
        (12.5, "t", 12.5),
        (3.0, "tonnes", 3.0),
        (2500.0, "kg", 2.5),
        (1.0, "kg", 0.001),
        (2_000_000.0, "g", 2.0),
        (3.0, "kt", 3000.0),
        (0.25, "kt", 250.0),
        (1.0, "lb", 0.00045359237),
        (2000.0, "lb", 0.90718474),  # 2000 lb is one short ton
        (2204.6226218487757, "lb", 1.0),  # 1 / 0.00045359237 lb is one tonne
        (10.0, "short_ton", 9.0718474),
        (1.0, "short_ton", 2000 * 0.00045359237),
        (1.0, "long_ton", 2240 * 0.00045359237),
        (4.0, " KG ", 0.004),
    ],
)
def test_contained_quantity_conversions(quantity: float, unit: str, tonnes: float) -> None:
    assert normalise_quantity(quantity, unit, "contained", None) == pytest.approx(
        tonnes, rel=1e-12
    )


@pytest.mark.parametrize(
    ("quantity", "unit", "grade", "tonnes"),
    [
        (1000.0, "t", 0.06, 60.0),  # 1,000 t of ore at 6 % contains 60 t
        (500.0, "kg", 0.5, 0.25),
        (2.0, "kt", 0.012, 24.0),
        (10.0, "short_ton", 0.1, 0.90718474),
        (7.0, "t", 1.0, 7.0),  # a grade of exactly 1 is allowed
    ],
)
def test_gross_quantity_is_multiplied_by_the_grade(
    quantity: float, unit: str, grade: float, tonnes: float
) -> None:
    assert normalise_quantity(quantity, unit, Basis.GROSS, grade) == pytest.approx(
        tonnes, rel=1e-12
    )


def test_basis_is_parsed_from_text() -> None:
    assert normalise_quantity(100.0, "t", " GROSS ", 0.5) == 50.0
    assert normalise_quantity(100.0, "t", "Contained", None) == 100.0


def test_zero_is_a_quantity() -> None:
    assert normalise_quantity(0.0, "t", "contained", None) == 0.0


def test_gross_without_grade_is_refused() -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_quantity(10.0, "t", "gross", None)
    assert str(exc_info.value) == "grade is required when basis is gross"


def test_contained_with_grade_is_refused() -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_quantity(10.0, "t", "contained", 0.5)
    assert str(exc_info.value) == "grade must be empty when basis is contained"


@pytest.mark.parametrize("grade", [0.0, -0.1, 1.0000001, 6.0, 60.0])
def test_grade_outside_zero_one_is_refused(grade: float) -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_quantity(10.0, "t", "gross", grade)
    assert str(exc_info.value) == f"grade {grade} is not a mass fraction in (0, 1]"


@pytest.mark.parametrize("grade", [math.nan, math.inf])
def test_non_finite_grade_is_refused(grade: float) -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_quantity(10.0, "t", "gross", grade)
    assert str(exc_info.value) == f"grade {grade!r} is not a finite number"


@pytest.mark.parametrize("quantity", [-1.0, -0.001])
def test_negative_quantity_is_refused(quantity: float) -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_quantity(quantity, "t", "contained", None)
    assert str(exc_info.value) == f"quantity {quantity} is negative"


@pytest.mark.parametrize("quantity", [math.nan, math.inf, -math.inf])
def test_non_finite_quantity_is_refused(quantity: float) -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_quantity(quantity, "t", "contained", None)
    assert str(exc_info.value) == f"quantity {quantity!r} is not a finite number"


@pytest.mark.parametrize("unit", ["oz", "m3", "", "tons", "usd/t"])
def test_unknown_mass_unit_is_refused(unit: str) -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_quantity(1.0, unit, "contained", None)
    assert str(exc_info.value) == (
        f"unit {unit!r} is not a mass unit "
        "(allowed: t, tonne, tonnes, kg, g, kt, lb, short_ton, long_ton)"
    )


def test_unit_conversion_error_is_a_standard_error() -> None:
    assert issubclass(UnitConversionError, StandardError)
    assert issubclass(UnitConversionError, ValueError)


def test_price_unit_table() -> None:
    assert PRICE_UNITS == {"usd/t": 1.0, "usd/kg": 1000.0, "usd/lb": 1 / 0.00045359237}


@pytest.mark.parametrize(
    ("price", "unit", "usd_t"),
    [
        (14_500.0, "USD/t", 14_500.0),
        (14_500.0, "usd/t", 14_500.0),
        (10.0, "USD/kg", 10_000.0),
        (12.5, "USD / kg", 12_500.0),
        (1.0, "USD/lb", 2204.6226218487757),  # 1 / 0.00045359237
        (15.0, "usd/lb", 33_069.339327731635),
    ],
)
def test_price_conversions(price: float, unit: str, usd_t: float) -> None:
    assert normalise_price(price, unit) == pytest.approx(usd_t, rel=1e-12)


@pytest.mark.parametrize("price", [0.0, -5.0])
def test_non_positive_price_is_refused(price: float) -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_price(price, "USD/t")
    assert str(exc_info.value) == f"price {price} is not positive"


def test_non_finite_price_is_refused() -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_price(math.inf, "USD/t")
    assert str(exc_info.value) == "price inf is not a finite number"


@pytest.mark.parametrize("unit", ["EUR/t", "USD/oz", "", "USD"])
def test_unknown_price_unit_is_refused(unit: str) -> None:
    with pytest.raises(UnitConversionError) as exc_info:
        normalise_price(10.0, unit)
    assert str(exc_info.value) == (
        f"price unit {unit!r} is not supported (allowed: USD/t, USD/kg, USD/lb)"
    )
