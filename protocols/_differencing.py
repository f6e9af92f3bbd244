"""The differencing ("jigsaw") rule, shared by the coordinator and the nodes.

If the pool once published a cell's figure over the companies ``S`` and later publishes the
*same cell definition* over ``S'`` where ``S`` and ``S'`` differ by one company, subtracting
the two figures isolates that company's value (up to the DP noise, which the two releases'
budgets still bound, but the suppression rule "at least 3 contributors" would be defeated).
The rule: a cell may be released over a set of contributors that equals a set already
released for the same cell definition, or differs from every such set by at least
:data:`MIN_SET_DIFFERENCE` companies (size of the symmetric difference).

A *cell definition* is what the figure measures: kind, measure, and the commodities, stages,
flows, countries, partner countries and periods the cell spans (:func:`cell_definitions`),
so two differently shaped queries that measure the same cell are recognised as the same.

Limits (also in SECURITY.md): the rule compares sets per identical cell definition only; it
does not catch differencing through *different* definitions that overlap (e.g. a country
total minus the sum of its regions when a region's members differ), which DP noise and the
budget bound instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from protocols._signing import canonical_json
from protocols._wire import AggregateQuery, Dimension

__all__ = [
    "MIN_SET_DIFFERENCE",
    "cell_definitions",
    "isolating_difference",
    "members_hash",
]

#: Smallest symmetric difference allowed between two contributor sets of one cell definition.
MIN_SET_DIFFERENCE = 3


def cell_definitions(query: AggregateQuery) -> list[str]:
    """A stable hash per cell of ``query`` (public-key order) naming what the cell measures."""
    keys = query.public_keys()
    definitions: list[str] = []
    partner = (list(query.partner_countries) if query.partner_countries is not None else None)
    for key in keys:
        cell: dict[str, Any] = dict(query.cell_slice(key))
        by_dim = dict(zip(query.group_by, key, strict=True))
        cell["periods"] = ([by_dim[Dimension.PERIOD]] if Dimension.PERIOD in by_dim
                           else sorted(query.periods))
        cell["partner_countries"] = ([by_dim[Dimension.PARTNER_COUNTRY]]
                                     if Dimension.PARTNER_COUNTRY in by_dim else partner)
        cell["kind"], cell["measure"] = str(query.kind), str(query.measure)
        for name in ("commodities", "stages", "flows", "countries", "partner_countries"):
            if cell[name] is not None:
                cell[name] = sorted(str(v) for v in cell[name])
        definitions.append(hashlib.sha256(canonical_json(cell)).hexdigest())
    return definitions


def members_hash(members: Iterable[str]) -> str:
    """A stable hash of a contributor set."""
    return hashlib.sha256(",".join(sorted(set(members))).encode("utf-8")).hexdigest()


def isolating_difference(members: Iterable[str], released: Iterable[Iterable[str]]
                         ) -> tuple[frozenset[str], frozenset[str]] | None:
    """The first released set that ``members`` differs from by 1 to
    ``MIN_SET_DIFFERENCE - 1`` companies, with ``members``; ``None`` if there is none."""
    wanted = frozenset(members)
    for other in released:
        previous = frozenset(other)
        if 0 < len(wanted ^ previous) < MIN_SET_DIFFERENCE:
            return wanted, previous
    return None
