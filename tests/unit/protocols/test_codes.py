"""Code lists: parsing of codes, the commodity table with its HS 2022 subheadings, trade flows."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import pytest

from protocols import (
    COMMODITIES,
    TRADE_FLOWS,
    Basis,
    Commodity,
    CommodityInfo,
    ContractType,
    Flow,
    Stage,
    StandardError,
    UnknownCodeError,
    commodity_info,
    parse_code,
)


@pytest.mark.parametrize(
    ("enum", "text", "expected"),
    [
        (Commodity, "cobalt", Commodity.COBALT),
        (Commodity, "COBALT", Commodity.COBALT),
        (Commodity, "  Lithium  ", Commodity.LITHIUM),
        (Commodity, "Natural Graphite", Commodity.NATURAL_GRAPHITE),
        (Commodity, "natural-graphite", Commodity.NATURAL_GRAPHITE),
        (Commodity, "Rare-Earths", Commodity.RARE_EARTHS),
        (Stage, "End of Life", Stage.END_OF_LIFE),
        (Stage, "end-of-life", Stage.END_OF_LIFE),
        (Flow, "Stock Level", Flow.STOCK_LEVEL),
        (Flow, "RECYCLING-INPUT", Flow.RECYCLING_INPUT),
        (ContractType, "Long-Term", ContractType.LONG_TERM),
        (Basis, " GROSS ", Basis.GROSS),
    ],
)
def test_parse_code_ignores_case_spaces_and_hyphens(
    enum: type[StrEnum], text: str, expected: StrEnum
) -> None:
    assert parse_code(enum, text, field="x") is expected


def test_parse_code_returns_a_member_unchanged() -> None:
    assert parse_code(Flow, Flow.PRICE, field="flow") is Flow.PRICE


def test_unknown_code_names_the_field_and_lists_the_allowed_codes() -> None:
    with pytest.raises(UnknownCodeError) as exc_info:
        parse_code(Flow, "shipments", field="flow")
    assert str(exc_info.value) == (
        "flow 'shipments' is not a known code (allowed: production, import, export, "
        "consumption, stock_level, recycling_input, waste, price)"
    )


def test_unknown_code_is_a_standard_error_and_a_value_error() -> None:
    with pytest.raises(UnknownCodeError) as exc_info:
        parse_code(Stage, "smelting", field="stage")
    assert isinstance(exc_info.value, StandardError)
    assert isinstance(exc_info.value, ValueError)
    assert str(exc_info.value) == (
        "stage 'smelting' is not a known code "
        "(allowed: mining, refining, manufacturing, use, end_of_life)"
    )


def test_code_lists_have_exactly_the_documented_values() -> None:
    assert [c.value for c in Commodity] == [
        "cobalt", "lithium", "natural_graphite", "nickel",
        "rare_earths", "tellurium", "copper", "manganese",
    ]
    assert [s.value for s in Stage] == [
        "mining", "refining", "manufacturing", "use", "end_of_life",
    ]
    assert [f.value for f in Flow] == [
        "production", "import", "export", "consumption",
        "stock_level", "recycling_input", "waste", "price",
    ]
    assert [c.value for c in ContractType] == ["spot", "long_term"]
    assert [b.value for b in Basis] == ["contained", "gross"]


def test_trade_flows_are_import_and_export() -> None:
    assert frozenset({Flow.IMPORT, Flow.EXPORT}) == TRADE_FLOWS
    assert Flow.PRODUCTION not in TRADE_FLOWS
    assert Flow.PRICE not in TRADE_FLOWS


def test_every_commodity_has_an_entry_keyed_by_its_own_code() -> None:
    assert set(COMMODITIES) == set(Commodity)
    for code, info in COMMODITIES.items():
        assert isinstance(info, CommodityInfo)
        assert info.code is code
        assert info.name
        assert info.element


@pytest.mark.parametrize("commodity", list(Commodity))
def test_every_commodity_has_hs2022_subheadings_of_form_nnnn_nn(commodity: Commodity) -> None:
    hs = COMMODITIES[commodity].hs2022
    assert len(hs) >= 1
    for subheading, description in hs:
        assert re.fullmatch(r"\d{4}\.\d{2}", subheading), subheading
        assert description.strip() == description
        assert description


def test_no_hs_subheading_is_assigned_to_two_commodities() -> None:
    subheadings = [s for info in COMMODITIES.values() for s, _ in info.hs2022]
    assert len(subheadings) == len(set(subheadings))


def test_known_hs_subheadings_are_listed() -> None:
    assert ("2836.91", "Lithium carbonates") in COMMODITIES[Commodity.LITHIUM].hs2022
    assert ("2605.00", "Cobalt ores and concentrates") in COMMODITIES[Commodity.COBALT].hs2022
    assert [s for s, _ in COMMODITIES[Commodity.NATURAL_GRAPHITE].hs2022] == ["2504.10", "2504.90"]
    assert [s for s, _ in COMMODITIES[Commodity.TELLURIUM].hs2022] == ["2804.50"]


def test_commodity_info_parses_its_argument() -> None:
    info = commodity_info(" Natural Graphite ")
    assert info.code is Commodity.NATURAL_GRAPHITE
    assert info.element == "C"
    assert commodity_info(Commodity.NICKEL).element == "Ni"


def test_commodity_info_refuses_an_unknown_commodity() -> None:
    with pytest.raises(UnknownCodeError) as exc_info:
        commodity_info("unobtainium")
    assert str(exc_info.value).startswith("commodity 'unobtainium' is not a known code")


def _commodity_table_rows() -> list[str]:
    rows = []
    for code, info in COMMODITIES.items():
        for i, (subheading, description) in enumerate(info.hs2022):
            first = f"| `{code.value}` | {info.name} | {info.element} |" if i == 0 else "| | | |"
            rows.append(f"{first} {subheading} | {description} |")
    return rows


def test_the_commodity_table_of_the_data_standard_document_is_exact() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "data-standard.md"
    lines = doc.read_text(encoding="utf-8").splitlines()
    header = "| Code | Commodity | Element | HS 2022 subheading | Description |"
    start = lines.index(header) + 2  # skip the header and its separator line
    table = lines[start : start + len(_commodity_table_rows()) + 1]
    assert table[:-1] == _commodity_table_rows()
    assert not table[-1].startswith("|")  # the table ends there
