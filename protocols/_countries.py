"""ISO 3166-1 alpha-3 country codes, validated against pycountry's copy of the standard."""

from __future__ import annotations

from functools import cache

import pycountry

from protocols._errors import UnknownCodeError

__all__ = ["all_country_codes", "country_name", "parse_country"]


@cache
def all_country_codes() -> tuple[str, ...]:
    """Every ISO 3166-1 alpha-3 code, sorted: the public key set for the country dimension."""
    return tuple(sorted(c.alpha_3 for c in pycountry.countries))


@cache
def _code_set() -> frozenset[str]:
    return frozenset(all_country_codes())


def parse_country(value: object, *, field: str = "country") -> str:
    """``value`` as an upper-case ISO 3166-1 alpha-3 code; else :class:`UnknownCodeError`."""
    code = str(value).strip().upper()
    if code not in _code_set():
        hint = " (use alpha-3, e.g. COD, not alpha-2)" if len(code) == 2 else ""
        raise UnknownCodeError(f"{field} {value!r} is not an ISO 3166-1 alpha-3 code{hint}")
    return code


def country_name(code: str) -> str:
    """The English short name of an alpha-3 code."""
    country = pycountry.countries.get(alpha_3=parse_country(code))
    return str(country.name) if country is not None else code
