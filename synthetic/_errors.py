"""Exceptions of :mod:`synthetic` (the hierarchy is listed in the package docstring)."""

from __future__ import annotations

__all__ = [
    "EvaluationError",
    "SyntheticDomainError",
    "SyntheticError",
    "SyntheticInputError",
    "SyntheticPrivacyError",
]


class SyntheticError(Exception):
    """Base class of every error raised by :mod:`synthetic`."""


class SyntheticDomainError(SyntheticError, ValueError):
    """The public domain (code lists, periods, numeric bounds) is invalid."""


class SyntheticInputError(SyntheticError, ValueError):
    """The records given to a synthesizer or an evaluation lack columns or rows."""


class SyntheticPrivacyError(SyntheticError, ValueError):
    """Privacy parameters are invalid or cannot be met (epsilon, delta, rows per unit)."""


class EvaluationError(SyntheticError, ValueError):
    """An evaluation cannot be computed (too few rows, unknown columns, bad policy)."""
