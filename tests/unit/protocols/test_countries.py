"""Countries: ISO 3166-1 alpha-3 only."""

from __future__ import annotations

import pytest

from protocols import UnknownCodeError, all_country_codes, country_name, parse_country


@pytest.mark.parametrize(
    ("text", "expected"),
    [("COD", "COD"), ("cod", "COD"), (" Deu ", "DEU"), ("chn", "CHN"), ("aus\n", "AUS")],
)
def test_alpha3_is_accepted_case_insensitively(text: str, expected: str) -> None:
    assert parse_country(text) == expected


def test_alpha2_is_refused_with_a_hint() -> None:
    with pytest.raises(UnknownCodeError) as exc_info:
        parse_country("CD")
    assert str(exc_info.value) == (
        "country 'CD' is not an ISO 3166-1 alpha-3 code (use alpha-3, e.g. COD, not alpha-2)"
    )


def test_unknown_code_is_refused_without_the_alpha2_hint() -> None:
    with pytest.raises(UnknownCodeError) as exc_info:
        parse_country("XYZ")
    assert str(exc_info.value) == "country 'XYZ' is not an ISO 3166-1 alpha-3 code"


@pytest.mark.parametrize("value", ["", "Germany", "D", "DEUT", "276", None])
def test_other_non_codes_are_refused(value: object) -> None:
    with pytest.raises(UnknownCodeError):
        parse_country(value)


def test_the_error_names_the_field() -> None:
    with pytest.raises(UnknownCodeError) as exc_info:
        parse_country("zz", field="partner_country")
    assert str(exc_info.value) == (
        "partner_country 'zz' is not an ISO 3166-1 alpha-3 code "
        "(use alpha-3, e.g. COD, not alpha-2)"
    )


def test_all_country_codes_is_sorted_unique_and_has_249_entries() -> None:
    codes = all_country_codes()
    assert isinstance(codes, tuple)
    assert len(codes) == 249
    assert list(codes) == sorted(codes)
    assert len(set(codes)) == 249
    assert all(len(c) == 3 and c.isascii() and c.isalpha() and c.isupper() for c in codes)
    assert codes[0] == "ABW"
    assert codes[-1] == "ZWE"
    assert {"AUS", "CHL", "CHN", "COD", "IDN", "ZAF"} <= set(codes)


def test_every_listed_code_parses_to_itself() -> None:
    for code in all_country_codes():
        assert parse_country(code.lower()) == code


def test_country_name() -> None:
    assert country_name("DEU") == "Germany"
    assert country_name("cod") == "Congo, The Democratic Republic of the"
    with pytest.raises(UnknownCodeError):
        country_name("DE")
