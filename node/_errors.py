"""Exceptions raised by :mod:`node`.

Hierarchy::

    NodeError                       base of everything this package raises
    ├── NodeConfigError             node home missing, settings or policy file invalid
    ├── IngestError                 a file could not be imported; nothing was changed
    │   └── (carries .problems: every bad row as file, row, field, reason)
    ├── QueryRefusedError           the node's policy does not allow this query
    ├── BudgetExceededError         the release would exceed the privacy budget
    │                               (carries requested and remaining epsilon per year)
    ├── JobNotFoundError            no such job, or not in a state that allows the action
    │                               (node._jobs)
    ├── CoordinatorUnreachableError the coordinator could not be reached (address, cause)
    ├── EnrolmentRefusedError       the coordinator refused enrolment or key rotation
    │                               (both node._enrolment)
    └── CoordinatorError            the coordinator answered outside the protocol
                                    (node._agent)
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols import PrivacyCost

__all__ = [
    "BudgetExceededError",
    "IngestError",
    "IngestProblem",
    "NodeConfigError",
    "NodeError",
    "QueryRefusedError",
]


class NodeError(Exception):
    """Base class of every error raised by :mod:`node`."""


class NodeConfigError(NodeError):
    """The node home, its settings or its policy file is missing or invalid."""


@dataclass(frozen=True)
class IngestProblem:
    """One reason a file was refused: where (file, row, field) and why.

    ``row`` is the row number a person sees in a spreadsheet or text editor: the header is
    row 1 and the first data row is row 2 (Parquet files are numbered the same way).
    ``None`` for file-level problems; ``field`` is the standard field concerned, if any.
    """

    file: str
    row: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.field is not None:
            where += f", field {self.field}"
        return f"{where}: {self.reason}"


class IngestError(NodeError):
    """A file was refused; the node's data is unchanged. ``problems`` lists every bad row."""

    def __init__(self, problems: list[IngestProblem], *, limit: int = 20) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(
            f"import refused, nothing was changed: {len(problems)} problem(s)\n{shown}{more}"
        )


class QueryRefusedError(NodeError):
    """The node's policy does not allow this query (the message says which rule)."""

    def __init__(self, reason: str, *, rule: str) -> None:
        self.rule = rule
        super().__init__(reason)


class BudgetExceededError(NodeError):
    """Releasing would exceed the privacy budget of at least one accounting year.

    ``requested`` is the release's cost (pure epsilon, or zCDP rho); ``remaining`` the epsilon
    each year has left (all tiers together, or the tier's own cap if lower).
    """

    def __init__(self, *, requested: PrivacyCost | float, remaining: dict[int, float]) -> None:
        self.cost = (requested if isinstance(requested, PrivacyCost)
                     else PrivacyCost(epsilon=requested))
        self.requested = self.cost.epsilon if self.cost.rho == 0 else self.cost.rho
        self.remaining = remaining
        short = ", ".join(
            f"{year}: {left:.4g} remaining" for year, left in sorted(remaining.items())
        )
        asked = (f"epsilon {self.cost.epsilon:.4g}" if self.cost.rho == 0
                 else f"rho {self.cost.rho:.4g} (zCDP)")
        super().__init__(
            f"privacy budget exceeded: requested {asked} per year, "
            f"but {short}; the release was refused and nothing was charged"
        )
