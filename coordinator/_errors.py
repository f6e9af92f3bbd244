"""Exceptions raised by :mod:`coordinator`.

Hierarchy::

    CoordinatorError              base of everything this package raises
    ├── CoordinatorConfigError    settings missing or invalid
    ├── EnrolmentError            a node could not be enrolled (unreachable, key mismatch)
    ├── UnknownQueryError         no query with that id
    ├── QueryFailedError          a pooled query could not be completed (the message says why)
    └── DifferencingRefusedError  the query could be differenced against published figures
                                  (coordinator._differencing; names the nodes)
"""

from __future__ import annotations

__all__ = [
    "CoordinatorConfigError",
    "CoordinatorError",
    "DifferencingRefusedError",
    "EnrolmentError",
    "QueryFailedError",
    "UnknownQueryError",
]


class CoordinatorError(Exception):
    """Base class of every error raised by :mod:`coordinator`."""


class CoordinatorConfigError(CoordinatorError):
    """Settings are missing or invalid."""


class EnrolmentError(CoordinatorError):
    """A node could not be enrolled."""


class UnknownQueryError(CoordinatorError):
    """No pooled query has this id."""


class QueryFailedError(CoordinatorError):
    """A pooled query could not be completed."""


class DifferencingRefusedError(CoordinatorError):
    """The query's cells could be differenced against published figures (which nodes)."""
