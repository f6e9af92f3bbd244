"""Units of the standard: quantities normalise to tonnes of contained element, prices to USD/t."""

from __future__ import annotations

import math

from protocols._codes import Basis, parse_code
from protocols._errors import UnitConversionError

__all__ = ["MASS_UNITS", "PRICE_UNITS", "normalise_price", "normalise_quantity"]

#: Mass units accepted in quantities, with their size in metric tonnes.
MASS_UNITS: dict[str, float] = {
    "t": 1.0,
    "tonne": 1.0,
    "tonnes": 1.0,
    "kg": 1e-3,
    "g": 1e-6,
    "kt": 1e3,
    "lb": 0.45359237e-3,
    "short_ton": 0.90718474,
    "long_ton": 1.0160469088,
}

#: Price units accepted, with the factor that converts them to USD per tonne.
PRICE_UNITS: dict[str, float] = {
    "usd/t": 1.0,
    "usd/kg": 1e3,
    "usd/lb": 1.0 / 0.45359237e-3,
}


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise UnitConversionError(f"{what} {value!r} is not a finite number")
    return value


def normalise_quantity(
    quantity: float, unit: str, basis: Basis | str, grade: float | None
) -> float:
    """Tonnes of contained element for a quantity in ``unit`` on ``basis``.

    ``basis="gross"`` needs ``grade``, the mass fraction of the element in (0, 1];
    ``basis="contained"`` must not have one. Negative quantities are refused: a return or
    a correction is a record of the opposite flow, not a negative one.
    """
    _finite(quantity, "quantity")
    if quantity < 0:
        raise UnitConversionError(f"quantity {quantity} is negative")
    key = unit.strip().lower()
    if key not in MASS_UNITS:
        raise UnitConversionError(
            f"unit {unit!r} is not a mass unit (allowed: {', '.join(MASS_UNITS)})"
        )
    tonnes = quantity * MASS_UNITS[key]
    basis = parse_code(Basis, basis, field="basis")
    if basis is Basis.GROSS:
        if grade is None:
            raise UnitConversionError("grade is required when basis is gross")
        _finite(grade, "grade")
        if not 0 < grade <= 1:
            raise UnitConversionError(f"grade {grade} is not a mass fraction in (0, 1]")
        return tonnes * grade
    if grade is not None:
        raise UnitConversionError("grade must be empty when basis is contained")
    return tonnes


def normalise_price(price: float, unit: str) -> float:
    """USD per tonne for a price in ``unit`` (USD/t, USD/kg or USD/lb). Must be positive."""
    _finite(price, "price")
    if price <= 0:
        raise UnitConversionError(f"price {price} is not positive")
    key = unit.strip().lower().replace(" ", "")
    if key not in PRICE_UNITS:
        raise UnitConversionError(
            f"price unit {unit!r} is not supported (allowed: USD/t, USD/kg, USD/lb)"
        )
    return price * PRICE_UNITS[key]
