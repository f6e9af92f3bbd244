"""Loading the versioned reference inputs of ``reference_data/`` (see its README.md).

Every table keeps its ``status`` column; values marked ``ILLUSTRATIVE`` are placeholders of
the right order of magnitude, not official figures, and everything computed from them says so.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from coordinator._hierarchy import region_table
from coordinator._indicators import EU2017Parameters, eu2017_parameters, trade_parameter

__all__ = ["ReferenceInputs", "reference_inputs"]


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("coordinator.reference_data").joinpath(name).read_text(
        encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@dataclass(frozen=True)
class ReferenceInputs:
    """Scaled WGI per country, export restrictions, EU agreements, sector value added,
    substitution indexes per commodity."""

    wgi_scaled: dict[str, float]
    restrictions: dict[tuple[str, str], list[str]]  # (commodity, iso3) -> measures
    agreements: frozenset[str]
    value_added: dict[str, float]
    parameters: EU2017Parameters
    illustrative: bool
    si_sr: dict[str, float] = field(default_factory=dict)  # commodity -> SI_SR
    si_ei: dict[str, float] = field(default_factory=dict)  # commodity -> SI_EI

    def t(self, commodity: str, iso3: str) -> float:
        """Trade parameter ``t_c`` of a supplier country for a commodity."""
        eu = iso3 in region_table().eu27 or iso3 in self.agreements
        return trade_parameter(restrictions=self.restrictions.get((commodity, iso3), []),
                               eu_member_or_agreement=eu, parameters=self.parameters)


@cache
def reference_inputs() -> ReferenceInputs:
    """The shipped reference inputs."""
    wgi = _rows("wgi_scaled.csv")
    restrictions: dict[tuple[str, str], list[str]] = {}
    rows = _rows("export_restrictions.csv")
    for r in rows:
        restrictions.setdefault((r["commodity"], r["iso3"]), []).append(r["measure"])
    agreements = _rows("eu_trade_agreements.csv")
    va = _rows("sector_value_added.csv")
    si = _rows("substitution_index.csv")
    statuses = {r["status"] for r in [*wgi, *rows, *agreements, *va, *si]}
    return ReferenceInputs(
        wgi_scaled={r["iso3"]: float(r["wgi_scaled"]) for r in wgi},
        restrictions=restrictions,
        agreements=frozenset(r["iso3"] for r in agreements),
        value_added={r["nace"]: float(r["value_added_eur_bn"]) for r in va},
        parameters=eu2017_parameters(),
        illustrative="ILLUSTRATIVE" in statuses,
        si_sr={r["commodity"]: float(r["si_sr"]) for r in si},
        si_ei={r["commodity"]: float(r["si_ei"]) for r in si},
    )
