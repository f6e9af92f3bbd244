"""Declared coverage: the cells a node says it reports on.

A node owner declares, in the node's policy, for which commodity x stage x flow x country the
company reports (typically what its annual report already says: "we mine cobalt in COD").
The declaration is public, part of every answer, and decides two things exactly and at no
privacy cost:

* the node releases only records inside its declared coverage;
* the coordinator counts a node as a *contributor* to a cell when its coverage meets the cell,
  and suppresses cells with fewer contributing companies than the query's minimum.

Because contributors are counted from declarations, not from data, a declaration wider than
the data overstates contributors; nodes check their declaration against their data locally
(``dpn node status``). Secure aggregation of exact counts replaces this in a later protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from protocols._codes import Commodity, Flow, Stage
from protocols._record import CountryCode

__all__ = ["CoverageEntry", "covers_slice"]


class CoverageEntry(BaseModel):
    """One declaration: this commodity, at these stages, these flows, in these countries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commodity: Commodity
    stages: Annotated[list[Stage], Field(min_length=1)]
    flows: Annotated[list[Flow], Field(min_length=1)]
    countries: Annotated[list[CountryCode], Field(min_length=1)]

    def covers(self, *, commodity: str, stage: str, flow: str, country: str) -> bool:
        """Whether one (commodity, stage, flow, country) combination is declared."""
        return (
            commodity == self.commodity
            and stage in self.stages
            and flow in self.flows
            and country in self.countries
        )


def covers_slice(
    coverage: Iterable[CoverageEntry],
    *,
    commodities: Iterable[str],
    stages: Iterable[str],
    flows: Iterable[str],
    countries: Iterable[str] | None,
) -> bool:
    """Whether any declaration meets the slice (each argument: the values the cell spans).

    ``countries=None`` means every country.
    """
    commodity_set, stage_set, flow_set = set(commodities), set(stages), set(flows)
    country_set = None if countries is None else set(countries)
    for entry in coverage:
        if entry.commodity not in commodity_set:
            continue
        if stage_set.isdisjoint(entry.stages) or flow_set.isdisjoint(entry.flows):
            continue
        if country_set is None or not country_set.isdisjoint(entry.countries):
            return True
    return False
