"""Geographic hierarchy (world > UN M49 region > country, plus EU27) and its suppression rule.

The regions come from ``reference_data/regions.csv`` (UN M49 regions of every ISO 3166-1
alpha-3 code; source and licence in ``reference_data/README.md``).

**Suppression in a hierarchy.** A suppressed cell (fewer than ``k`` contributing companies)
must not be recoverable by subtracting published figures. Two cases:

* *Totals built from published cells only* (what :func:`coordinator.reconcile_balance` does
  today: the coordinator never learns a suppressed cell's value, because pooling withholds
  it). Such a total reveals nothing beyond its published members; it is published as
  *partial* and lists the members it lacks. Nothing can be recovered by differencing.
* *Totals measured by their own query* (a world or region query that also covers companies
  of suppressed countries; used by the benchmark, and by a future balance with measured
  parents). Then ``parent - published children`` is the sum of the suppressed children. The
  rule (:func:`publishable_totals`), applied bottom-up: for every published total, the
  suppressed leaves under it that are not under a published sub-total form its *residual*;
  the total is published only if that residual is empty or has at least ``k`` distinct
  contributing companies. Otherwise the **parent total is suppressed** (we never suppress an
  extra sibling), and its residual passes up to the next level. Because the published totals
  form a tree (a laminar family), every sum an observer can derive from them is a union of
  such residuals and published leaves, so no derivable sum has fewer than ``k`` companies
  behind it. Overlapping groupings (EU27 overlaps M49 Europe and Asia) break the tree: EU27
  is only ever built from published cells (the first case).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "EU27",
    "WORLD",
    "RegionTable",
    "Tree",
    "publishable_totals",
    "region_table",
]

WORLD = "World"
EU27 = "EU27"


@dataclass(frozen=True)
class RegionTable:
    """Country -> M49 region, and the EU27 members."""

    region_of: Mapping[str, str]
    eu27: frozenset[str]
    version: str

    def members(self, region: str) -> list[str]:
        """Countries of an M49 region (or ``EU27``), sorted."""
        if region == EU27:
            return sorted(self.eu27)
        return sorted(c for c, r in self.region_of.items() if r == region)

    def regions(self) -> list[str]:
        """The M49 regions, sorted."""
        return sorted(set(self.region_of.values()))


@cache
def region_table() -> RegionTable:
    """The shipped region table (``reference_data/regions.csv``)."""
    text = resources.files("coordinator.reference_data").joinpath("regions.csv").read_text(
        encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    return RegionTable(
        region_of={r["iso3"]: r["region"] for r in rows},
        eu27=frozenset(r["iso3"] for r in rows if r["eu27"] == "1"),
        version="regions.csv v1 (UN M49 via lukes/ISO-3166-Countries-with-Regional-Codes "
                "2024-06-19)",
    )


@dataclass(frozen=True)
class Tree:
    """A hierarchy of totals: ``children[node]`` lists the node's children (nodes or leaves)."""

    root: str
    children: Mapping[str, Sequence[str]]

    def leaves_under(self, node: str) -> list[str]:
        """The leaves (names without children) under ``node``."""
        if node not in self.children:
            return [node]
        out: list[str] = []
        for child in self.children[node]:
            out.extend(self.leaves_under(child))
        return out


def publishable_totals(*, tree: Tree, suppressed_leaves: set[str],
                       contributors: Mapping[str, frozenset[str]],
                       min_contributors: int = 3) -> dict[str, bool]:
    """Which measured totals of ``tree`` may be published (the residual rule, see module doc).

    ``contributors`` gives the companies contributing to each suppressed leaf; an unknown
    leaf counts as having none, so its residual can never pass (conservative).
    """
    published: dict[str, bool] = {}

    def residual(node: str) -> set[str]:
        """Suppressed leaves under ``node`` not under a published proper sub-total."""
        if node not in tree.children:
            return {node} if node in suppressed_leaves else set()
        pending: set[str] = set()
        for child in tree.children[node]:
            pending |= residual(child)
        companies: set[str] = set()
        for leaf in pending:
            companies |= contributors.get(leaf, frozenset())
        ok = not pending or (len(companies) >= min_contributors)
        published[node] = ok
        return set() if ok else pending

    residual(tree.root)
    return published
