"""The reporting record: one row of a company's data, mapped into the standard.

A record is long-format: one flow of one commodity, at one stage, in one country and period.
See docs/data-standard.md for the field reference and worked examples.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from protocols._codes import (
    TRADE_FLOWS,
    Basis,
    Commodity,
    ContractType,
    Flow,
    Stage,
    parse_code,
)
from protocols._countries import parse_country
from protocols._periods import parse_period
from protocols._units import normalise_price, normalise_quantity

__all__ = [
    "CountryCode",
    "PeriodText",
    "ReportingRecord",
]


def _period_text(value: object) -> str:
    return str(parse_period(value))


def _country_code(value: object, info: ValidationInfo) -> str:
    return parse_country(value, field=info.field_name or "country")


def _code_parser(enum: Any, field: str) -> BeforeValidator:
    return BeforeValidator(lambda v: parse_code(enum, v, field=field))


#: A period in canonical text form (``2024``, ``2024-Q3``, ``2024-07``).
PeriodText = Annotated[str, BeforeValidator(_period_text)]
#: An ISO 3166-1 alpha-3 country code.
CountryCode = Annotated[str, BeforeValidator(_country_code)]
_Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.:/#@+-]+$")]


def _blank_to_none(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, float) and value != value:  # NaN from a spreadsheet
        return None
    return value


_Optional = BeforeValidator(_blank_to_none)


def _optional_basis(value: object) -> Basis | None:
    value = _blank_to_none(value)
    return None if value is None else parse_code(Basis, value, field="basis")


def _optional_contract_type(value: object) -> ContractType | None:
    value = _blank_to_none(value)
    return None if value is None else parse_code(ContractType, value, field="contract_type")


class ReportingRecord(BaseModel):
    """One reporting record as mapped from a company's file (before normalisation).

    Rules beyond the field types (each violation names its field):

    * ``partner_country`` is required on import and export flows and forbidden on others;
    * the price flow needs ``price``, ``price_unit`` and ``contract_type``;
      every other flow needs ``quantity``, ``unit`` and ``basis``;
    * a gross quantity needs a ``grade`` in (0, 1]; a contained one must not have one;
    * a stock level needs a ``site_id`` (the store the level belongs to), because closing
      stocks are taken per site and are not summed over months.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    record_id: _Id
    period: PeriodText
    commodity: Annotated[Commodity, _code_parser(Commodity, "commodity")]
    stage: Annotated[Stage, _code_parser(Stage, "stage")]
    flow: Annotated[Flow, _code_parser(Flow, "flow")]
    country: CountryCode
    partner_country: Annotated[CountryCode | None, _Optional] = None
    quantity: Annotated[float | None, _Optional] = None
    unit: Annotated[str | None, _Optional] = None
    basis: Annotated[Basis | None, BeforeValidator(_optional_basis)] = None
    grade: Annotated[float | None, _Optional] = None
    price: Annotated[float | None, _Optional] = None
    price_unit: Annotated[str | None, _Optional] = None
    contract_type: Annotated[ContractType | None, BeforeValidator(_optional_contract_type)] = None
    site_id: Annotated[_Id | None, _Optional] = None
    contract_id: Annotated[_Id | None, _Optional] = None

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        flow = self.flow
        if flow in TRADE_FLOWS and self.partner_country is None:
            raise ValueError(f"partner_country: required for the {flow} flow")
        if flow not in TRADE_FLOWS and self.partner_country is not None:
            raise ValueError(f"partner_country: only import and export have one, not {flow}")
        if flow is Flow.PRICE:
            for name in ("price", "price_unit", "contract_type"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: required for the price flow")
            assert self.price is not None and self.price_unit is not None
            normalise_price(self.price, self.price_unit)
        else:
            for name in ("quantity", "unit", "basis"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: required for the {flow} flow")
            if self.price is not None:
                normalise_price(self.price, self.price_unit or "")
        if self.quantity is not None:
            normalise_quantity(self.quantity, self.unit or "", self.basis or "", self.grade)
        if flow is Flow.STOCK_LEVEL and self.site_id is None:
            raise ValueError("site_id: required for stock levels (closing stock is per site)")
        return self

    @property
    def quantity_t(self) -> float | None:
        """Quantity in tonnes of contained element, or ``None`` when there is none."""
        if self.quantity is None:
            return None
        assert self.unit is not None and self.basis is not None
        return normalise_quantity(self.quantity, self.unit, self.basis, self.grade)

    @property
    def price_usd_t(self) -> float | None:
        """Price in USD per tonne, or ``None`` when there is none."""
        if self.price is None:
            return None
        return normalise_price(self.price, self.price_unit or "")

    @property
    def contribution_unit(self) -> str:
        """Who a record's contribution is bounded for: its site, else its contract, else itself."""
        if self.site_id is not None:
            return f"site:{self.site_id}"
        if self.contract_id is not None:
            return f"contract:{self.contract_id}"
        return f"record:{self.record_id}"
