"""Wire models exchanged between coordinator and nodes (API version ``v1``).

Both sides import these models; the JSON they produce is the protocol. A node answers an
:class:`AggregateQuery` with a :class:`SignedAnswer` holding one figure per public key of the
query, in :meth:`AggregateQuery.public_keys` order (the keys themselves are implied), so the
shape of an answer never reveals which cells a company has data in.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols._codes import TRADE_FLOWS, Commodity, ContractType, Flow, Stage
from protocols._countries import all_country_codes
from protocols._coverage import CoverageEntry, covers_slice
from protocols._ledger import Receipt
from protocols._periods import parse_period
from protocols._record import CountryCode, PeriodText

__all__ = [
    "API_VERSION",
    "MAX_CELLS",
    "AggregateQuery",
    "Bounds",
    "Dimension",
    "ErrorBody",
    "Measure",
    "NodeAnswer",
    "NodeInfo",
    "QueryKind",
    "SignedAnswer",
]

API_VERSION = "v1"
#: Largest number of public keys (cells) one query may ask for.
MAX_CELLS = 100_000
_QUERY_ID = re.compile(r"[0-9a-f]{32}")


class QueryKind(StrEnum):
    """What is released per cell."""

    SUM = "sum"  # noisy sum of the measure
    COUNT = "count"  # noisy number of records
    MEAN = "mean"  # noisy sum and noisy count, half the epsilon each; mean = sum / count


class Measure(StrEnum):
    """Which normalised value a sum or mean is over."""

    QUANTITY = "quantity_t"  # tonnes of contained element
    PRICE = "price_usd_t"  # USD per tonne (price flow only)
    VALUE = "value_usd"  # price_usd_t x quantity_t of a record, USD (price flow only)


class Dimension(StrEnum):
    """Public dimensions a query may group by."""

    COMMODITY = "commodity"
    STAGE = "stage"
    FLOW = "flow"
    COUNTRY = "country"
    PARTNER_COUNTRY = "partner_country"
    PERIOD = "period"
    CONTRACT_TYPE = "contract_type"  # spot | long_term (price flow only)


class Bounds(BaseModel):
    """Contribution bounds; they fix the sensitivity and therefore the noise scale.

    * every record's value is clipped to ``[0, record_clip]`` (measure units);
    * a contribution unit (a site, else a contract, else the record) in one accounting year
      contributes at most ``unit_sum_bound`` in total over all cells of the query (L1): its
      per-cell sums are scaled down together when they exceed it;
    * it contributes at most ``unit_record_bound`` records to counts (the first by record id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_clip: Annotated[float, Field(ge=0.001, le=1e9)]  # at least one fixed-point unit
    unit_sum_bound: Annotated[float, Field(ge=0.001, le=1e9)]
    unit_record_bound: Annotated[int, Field(ge=1, le=10_000)] = 12


class AggregateQuery(BaseModel):
    """A grouped aggregate over the records of every node, answered with DP noise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_id: str
    kind: QueryKind
    measure: Measure = Measure.QUANTITY
    commodities: Annotated[list[Commodity], Field(min_length=1)]
    flows: Annotated[list[Flow], Field(min_length=1)]
    stages: list[Stage] | None = None
    periods: Annotated[list[PeriodText], Field(min_length=1, max_length=600)]
    countries: list[CountryCode] | None = None
    partner_countries: list[CountryCode] | None = None
    group_by: list[Dimension] = Field(default_factory=list)
    epsilon: Annotated[float, Field(ge=1e-4, le=10)]
    bounds: Bounds
    min_contributors: Annotated[int, Field(ge=3, le=1000)] = 3
    purpose: Annotated[str, Field(min_length=3, max_length=500)]

    @field_validator("query_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _QUERY_ID.fullmatch(value):
            raise ValueError("query_id must be 32 lower-case hex digits (uuid4().hex)")
        return value

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        for name in ("commodities", "flows", "stages", "periods", "countries",
                     "partner_countries", "group_by"):
            values = getattr(self, name)
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"{name}: contains duplicates")
        periods = [parse_period(p) for p in self.periods]
        for a, b in itertools.combinations(periods, 2):
            if a.overlaps(b):
                raise ValueError(f"periods: {a} and {b} overlap")
        price = self.measure is Measure.PRICE
        if price and self.flows != [Flow.PRICE]:
            raise ValueError("flows: the price measure is only defined on the price flow")
        if self.measure is Measure.VALUE and self.flows != [Flow.PRICE]:
            raise ValueError("flows: the value measure is only defined on the price flow")
        # quantities of the price flow (priced tonnes) are summed on their own, never mixed
        if (self.measure is Measure.QUANTITY and self.kind is not QueryKind.COUNT
                and Flow.PRICE in self.flows and self.flows != [Flow.PRICE]):
            raise ValueError("flows: use measure price_usd_t for the price flow")
        if Dimension.CONTRACT_TYPE in self.group_by and self.flows != [Flow.PRICE]:
            raise ValueError("group_by: contract_type applies to the price flow only")
        if Dimension.PARTNER_COUNTRY in self.group_by and not set(self.flows) <= TRADE_FLOWS:
            raise ValueError("group_by: partner_country applies to import and export flows only")
        if self.cell_count() > MAX_CELLS:
            raise ValueError(f"group_by: {self.cell_count()} cells exceed the limit {MAX_CELLS}")
        return self

    def domain(self, dim: Dimension) -> list[str]:
        """The public key values of one dimension, in canonical order."""
        if dim is Dimension.COMMODITY:
            return [str(c) for c in self.commodities]
        if dim is Dimension.FLOW:
            return [str(f) for f in self.flows]
        if dim is Dimension.STAGE:
            return [str(s) for s in (self.stages or list(Stage))]
        if dim is Dimension.COUNTRY:
            return list(self.countries or all_country_codes())
        if dim is Dimension.PARTNER_COUNTRY:
            return list(self.partner_countries or all_country_codes())
        if dim is Dimension.CONTRACT_TYPE:
            return [str(c) for c in ContractType]
        return list(self.periods)

    def cell_count(self) -> int:
        """Number of public keys (cells) in the answer."""
        count = 1
        for dim in self.group_by:
            count *= len(self.domain(dim))
        return count

    def public_keys(self) -> list[tuple[str, ...]]:
        """Every cell key (one value per ``group_by`` dimension), in canonical order."""
        return list(itertools.product(*(self.domain(d) for d in self.group_by)))

    def cell_slice(self, key: list[str] | tuple[str, ...]) -> dict[str, list[str] | None]:
        """The commodities, stages, flows and countries one cell spans (``None``: all countries)."""
        by_dim = dict(zip(self.group_by, key, strict=True))

        def values(dim: Dimension) -> list[str]:
            return [by_dim[dim]] if dim in by_dim else self.domain(dim)

        countries = (
            [by_dim[Dimension.COUNTRY]]
            if Dimension.COUNTRY in by_dim
            else (list(self.countries) if self.countries is not None else None)
        )
        return {
            "commodities": values(Dimension.COMMODITY),
            "stages": values(Dimension.STAGE),
            "flows": values(Dimension.FLOW),
            "countries": countries,
        }

    def accounting_periods(self) -> list[int]:
        """Calendar years whose budget a release of this query is charged to."""
        return sorted({parse_period(p).year for p in self.periods})


class NodeAnswer(BaseModel):
    """A node's DP release for one query. Everything in it may leave the node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_id: str
    node_id: str
    kind: QueryKind
    measure: Measure
    group_by: list[Dimension]
    sums: list[float] | None = Field(
        default=None, description="noisy sum per cell, in AggregateQuery.public_keys() order"
    )
    counts: list[float] | None = Field(
        default=None, description="noisy count per cell, in AggregateQuery.public_keys() order"
    )
    sum_scale: float | None = Field(
        default=None, description="Laplace scale b of every cell's sum (measure units)"
    )
    count_scale: float | None = Field(
        default=None, description="Laplace scale b of every cell's count"
    )
    epsilon: float = Field(description="pure-DP epsilon charged to each accounting period")
    delta: float = 0.0
    accounting_periods: list[int]
    mechanism: str
    privacy_unit: str
    coverage: list[CoverageEntry] = Field(
        description="the node's declared coverage; it contributes to cells that meet it"
    )
    released_at: datetime

    def contributes(self, query: AggregateQuery, key: list[str] | tuple[str, ...]) -> bool:
        """Whether this node counts as a contributor to the cell ``key`` of ``query``."""
        cell = query.cell_slice(key)
        return covers_slice(
            self.coverage,
            commodities=cell["commodities"] or [],
            stages=cell["stages"] or [],
            flows=cell["flows"] or [],
            countries=cell["countries"],
        )


class SignedAnswer(BaseModel):
    """A :class:`NodeAnswer` with the node's Ed25519 signature over its canonical JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: NodeAnswer
    signature: str
    key_id: str
    receipt: Receipt | None = Field(
        default=None, description="the node's signed ledger receipt of this release "
        "(its payload_sha256 is the SHA-256 of the answer's canonical JSON)")


class NodeInfo(BaseModel):
    """What a node says about itself at ``GET /v1/info`` (public)."""

    node_id: str
    display_name: str
    public_key: str
    key_id: str
    api_version: str = API_VERSION
    allowed_commodities: list[Commodity]


class ErrorBody(BaseModel):
    """The JSON body of every error response of both services."""

    error: str = Field(description="stable machine-readable code, e.g. budget_exceeded")
    message: str = Field(description="what went wrong and what to do next")
    detail: dict[str, Any] = Field(default_factory=dict)
