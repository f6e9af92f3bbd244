"""Code lists of the data standard: commodities (with HS 2022 codes), stages, flows, contracts.

See docs/data-standard.md for the meaning of each code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from protocols._errors import UnknownCodeError

__all__ = [
    "COMMODITIES",
    "TRADE_FLOWS",
    "Basis",
    "Commodity",
    "CommodityInfo",
    "ContractType",
    "Flow",
    "Stage",
    "commodity_info",
    "parse_code",
]


_E = TypeVar("_E", bound=StrEnum)


class Commodity(StrEnum):
    """Commodities covered by the standard; quantities are tonnes of the contained element."""

    COBALT = "cobalt"
    LITHIUM = "lithium"
    NATURAL_GRAPHITE = "natural_graphite"
    NICKEL = "nickel"
    RARE_EARTHS = "rare_earths"
    TELLURIUM = "tellurium"
    COPPER = "copper"
    MANGANESE = "manganese"


class Stage(StrEnum):
    """Value-chain stage at which a record's flow happens."""

    MINING = "mining"
    REFINING = "refining"  # refining and processing
    MANUFACTURING = "manufacturing"
    USE = "use"
    END_OF_LIFE = "end_of_life"  # collection and recycling


class Flow(StrEnum):
    """What a record measures."""

    PRODUCTION = "production"
    IMPORT = "import"
    EXPORT = "export"
    CONSUMPTION = "consumption"
    STOCK_LEVEL = "stock_level"  # closing stock at the end of the record's period
    RECYCLING_INPUT = "recycling_input"
    WASTE = "waste"
    PRICE = "price"


#: Flows that have a partner country (and must have one).
TRADE_FLOWS: frozenset[Flow] = frozenset({Flow.IMPORT, Flow.EXPORT})


class ContractType(StrEnum):
    """Contract type of a price record."""

    SPOT = "spot"
    LONG_TERM = "long_term"


class Basis(StrEnum):
    """How a quantity is expressed before normalisation."""

    CONTAINED = "contained"  # tonnes of the contained element already
    GROSS = "gross"  # gross weight of the product; multiply by grade (mass fraction)


@dataclass(frozen=True)
class CommodityInfo:
    """A commodity's code, name, element symbol and HS 2022 subheadings."""

    code: Commodity
    name: str
    element: str
    hs2022: tuple[tuple[str, str], ...]  # (subheading, description)


COMMODITIES: dict[Commodity, CommodityInfo] = {
    info.code: info
    for info in (
        CommodityInfo(
            Commodity.COBALT,
            "Cobalt",
            "Co",
            (
                ("2605.00", "Cobalt ores and concentrates"),
                ("2822.00", "Cobalt oxides and hydroxides"),
                ("8105.20", "Cobalt mattes and other intermediates; unwrought cobalt; powders"),
                ("8105.30", "Cobalt waste and scrap"),
            ),
        ),
        CommodityInfo(
            Commodity.LITHIUM,
            "Lithium",
            "Li",
            (
                ("2530.90", "Mineral substances n.e.s. (includes spodumene and petalite)"),
                ("2825.20", "Lithium oxide and hydroxide"),
                ("2836.91", "Lithium carbonates"),
                ("2805.19", "Alkali metals other than sodium (includes lithium metal)"),
            ),
        ),
        CommodityInfo(
            Commodity.NATURAL_GRAPHITE,
            "Natural graphite",
            "C",
            (
                ("2504.10", "Natural graphite in powder or flakes"),
                ("2504.90", "Natural graphite, other"),
            ),
        ),
        CommodityInfo(
            Commodity.NICKEL,
            "Nickel",
            "Ni",
            (
                ("2604.00", "Nickel ores and concentrates"),
                ("7501.10", "Nickel mattes"),
                ("7501.20", "Nickel oxide sinters and other intermediates"),
                ("7502.10", "Unwrought nickel, not alloyed"),
                ("2833.24", "Nickel sulphates"),
            ),
        ),
        CommodityInfo(
            Commodity.RARE_EARTHS,
            "Rare earth elements",
            "REE",
            (
                ("2805.30", "Rare-earth metals, scandium and yttrium"),
                ("2846.10", "Cerium compounds"),
                ("2846.90", "Other rare-earth compounds"),
            ),
        ),
        CommodityInfo(
            Commodity.TELLURIUM,
            "Tellurium",
            "Te",
            (("2804.50", "Boron; tellurium"),),
        ),
        CommodityInfo(
            Commodity.COPPER,
            "Copper",
            "Cu",
            (
                ("2603.00", "Copper ores and concentrates"),
                ("7402.00", "Unrefined copper; copper anodes"),
                ("7403.11", "Refined copper cathodes"),
            ),
        ),
        CommodityInfo(
            Commodity.MANGANESE,
            "Manganese",
            "Mn",
            (
                ("2602.00", "Manganese ores and concentrates"),
                ("8111.00", "Manganese and articles thereof"),
            ),
        ),
    )
}


def commodity_info(code: Commodity | str) -> CommodityInfo:
    """Return the code-list entry of a commodity (raises :class:`UnknownCodeError`)."""
    return COMMODITIES[parse_code(Commodity, code, field="commodity")]


def parse_code(enum: type[_E], value: object, *, field: str) -> _E:
    """Parse ``value`` (case- and space-insensitive) into a member of ``enum``.

    Raises :class:`UnknownCodeError` naming the field and the allowed codes.
    """
    if isinstance(value, enum):
        return value
    text = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    try:
        return enum(text)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise UnknownCodeError(
            f"{field} {value!r} is not a known code (allowed: {allowed})"
        ) from None
