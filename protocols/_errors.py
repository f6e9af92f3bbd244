"""Exceptions raised by :mod:`protocols`.

Hierarchy::

    ProtocolError                 base of everything this package raises
    ├── StandardError             a value does not conform to the data standard
    │   ├── UnknownCodeError      commodity, stage, flow, country or unit code not in the code list
    │   ├── InvalidPeriodError    period string is not YYYY, YYYY-Qn or YYYY-MM
    │   └── UnitConversionError   quantity or price cannot be normalised
    ├── PrivacyParameterError     epsilon, sensitivity or bound is out of range
    └── SignatureError            a signed message failed verification
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = [
    "InvalidPeriodError",
    "PrivacyParameterError",
    "ProtocolError",
    "SignatureError",
    "StandardError",
    "UnitConversionError",
    "UnknownCodeError",
    "describe_validation_error",
]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocols`."""


class StandardError(ProtocolError, ValueError):
    """A value does not conform to the data standard (see docs/data-standard.md)."""


class UnknownCodeError(StandardError):
    """A code is not in its code list."""


class InvalidPeriodError(StandardError):
    """A period string is not ``YYYY``, ``YYYY-Qn`` or ``YYYY-MM``."""


class UnitConversionError(StandardError):
    """A quantity or price cannot be normalised to the standard unit."""


class PrivacyParameterError(ProtocolError, ValueError):
    """A privacy parameter (epsilon, sensitivity, bound) is out of its allowed range."""


class SignatureError(ProtocolError):
    """A signature is missing, malformed, or does not verify against the sender's key."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: reason`` (without pydantic's URLs)."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "(whole object)"
        reason = str(error.get("msg", "")).removeprefix("Value error, ")
        lines.append(f"{where}: {reason}")
    return "; ".join(lines)
