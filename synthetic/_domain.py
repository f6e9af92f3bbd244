"""The public domain of a synthetic release and the rows' encoding, bounding and constraints.

Everything here that shapes a release depends on *public* parameters only: the code lists of
the data standard (:mod:`protocols`), the periods and numeric bounds the caller passes. No
category list, minimum or maximum is ever read from the records.

Synthetic rows are in the standard's *normalised form* (:data:`COLUMNS`): one row per flow,
quantities in tonnes of contained element (``quantity_t``), prices in USD per tonne
(``price_usd_t``). Identifiers (record, site, contract) are never synthesised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from protocols import (
    TRADE_FLOWS,
    Basis,
    Commodity,
    ContractType,
    Flow,
    ReportingRecord,
    Stage,
    all_country_codes,
    parse_code,
    parse_country,
    parse_period,
)
from synthetic._errors import SyntheticDomainError, SyntheticInputError

__all__ = [
    "COLUMNS",
    "INPUT_COLUMNS",
    "PublicDomain",
    "as_reporting_records",
    "bound_contributions",
    "check_rows",
    "split_holdout",
]

#: Columns of every synthetic frame, in this order (the standard's normalised form).
COLUMNS: tuple[str, ...] = (
    "period",
    "commodity",
    "stage",
    "flow",
    "country",
    "partner_country",
    "contract_type",
    "quantity_t",
    "price_usd_t",
)
#: Columns a synthesizer reads: :data:`COLUMNS` plus the record's contribution unit
#: (``site:<id>``, else ``contract:<id>``, else ``record:<id>``; see docs/data-standard.md).
INPUT_COLUMNS: tuple[str, ...] = (*COLUMNS, "contribution_unit")

_TRADE = frozenset(str(f) for f in TRADE_FLOWS)
_PRICE = str(Flow.PRICE)
_NUMERIC = ("quantity_t", "price_usd_t")
_OPTIONAL_CATEGORICAL = ("partner_country", "contract_type")


@dataclass(frozen=True)
class _Column:
    """How one column is encoded to integer codes ``0 .. size - 1``.

    Categorical: ``categories[i]`` is code ``i`` (``None`` first when the column is optional).
    Numeric: code 0 is "absent"; code ``i >= 1`` is the bin ``[edges[i-1], edges[i]]``, the
    first bin linear from 0, the others geometric.
    """

    name: str
    ordered: bool
    categories: tuple[str | None, ...] = ()
    edges: tuple[float, ...] = ()

    @property
    def numeric(self) -> bool:
        return bool(self.edges)

    @property
    def size(self) -> int:
        return len(self.edges) if self.numeric else len(self.categories)

    @property
    def absent_code(self) -> int | None:
        """The code meaning "no value", or ``None`` when the column always has one."""
        if self.numeric:
            return 0
        return 0 if self.categories and self.categories[0] is None else None


def _codes(enum: Any, values: Sequence[object] | None, field_name: str) -> tuple[str, ...]:
    members = list(enum) if values is None else [parse_code(enum, v, field=field_name)
                                                 for v in values]
    out = tuple(dict.fromkeys(str(m) for m in members))
    if not out:
        raise SyntheticDomainError(f"{field_name}: the public domain is empty")
    return out


def _countries(values: Sequence[str] | None, field_name: str) -> tuple[str, ...]:
    if values is None:
        return all_country_codes()
    try:
        out = tuple(dict.fromkeys(parse_country(v, field=field_name) for v in values))
    except Exception as exc:
        raise SyntheticDomainError(str(exc)) from None
    if not out:
        raise SyntheticDomainError(f"{field_name}: the public domain is empty")
    return out


@dataclass(frozen=True, kw_only=True)
class PublicDomain:
    """What a synthetic release may contain: public code lists, periods and numeric bounds.

    Pass the node's *declared coverage* (public by design) to narrow commodities, stages,
    flows and countries: every category of the domain gets a noisy count, and a narrow domain
    keeps noise from spreading mass over categories the node never reports. ``periods`` are
    canonical period texts (``2024-07``, ``2024-Q3``, ``2024``). ``quantity_max_t`` and
    ``price_max_usd_t`` are public clipping bounds: larger values are clipped to them, and
    ``numeric_bins`` geometric bins span ``numeric_decades`` decades below them (the first
    bin goes down to zero). Records outside the domain are dropped before fitting (a rule
    that depends on each record alone).
    """

    periods: Sequence[str]
    quantity_max_t: float
    price_max_usd_t: float
    commodities: Sequence[str] | None = None
    stages: Sequence[str] | None = None
    flows: Sequence[str] | None = None
    countries: Sequence[str] | None = None
    partner_countries: Sequence[str] | None = None
    numeric_bins: int = 32
    numeric_decades: float = 5.0
    _columns: tuple[_Column, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            periods = tuple(dict.fromkeys(str(parse_period(p)) for p in self.periods))
        except Exception as exc:
            raise SyntheticDomainError(f"periods: {exc}") from None
        if not periods:
            raise SyntheticDomainError("periods: the public domain is empty")
        for name in ("quantity_max_t", "price_max_usd_t"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SyntheticDomainError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.numeric_bins, int) and 2 <= self.numeric_bins <= 1000):
            raise SyntheticDomainError("numeric_bins must be an integer in [2, 1000]")
        if not (0 < self.numeric_decades <= 15):
            raise SyntheticDomainError("numeric_decades must be in (0, 15]")
        try:
            commodities = _codes(Commodity, self.commodities, "commodity")
            stages = _codes(Stage, self.stages, "stage")
            flows = _codes(Flow, self.flows, "flow")
        except SyntheticDomainError:
            raise
        except Exception as exc:
            raise SyntheticDomainError(str(exc)) from None
        countries = _countries(self.countries, "country")
        partners = _countries(self.partner_countries, "partner_country")
        contracts = tuple(str(c) for c in ContractType)
        columns = (
            _Column("period", True, periods),
            _Column("commodity", False, commodities),
            _Column("stage", False, stages),
            _Column("flow", False, flows),
            _Column("country", False, countries),
            _Column("partner_country", False, (None, *partners)),
            _Column("contract_type", False, (None, *contracts)),
            _Column("quantity_t", True, edges=self._edges(self.quantity_max_t)),
            _Column("price_usd_t", True, edges=self._edges(self.price_max_usd_t)),
        )
        object.__setattr__(self, "_columns", columns)

    def _edges(self, top: float) -> tuple[float, ...]:
        low = float(top) / 10.0**self.numeric_decades
        return (0.0, *np.geomspace(low, float(top), self.numeric_bins).tolist())

    @property
    def columns(self) -> tuple[_Column, ...]:
        """The encoding of every column of :data:`COLUMNS`, in order."""
        return self._columns

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of codes of each column (its histogram's length)."""
        return tuple(c.size for c in self._columns)

    @property
    def years(self) -> tuple[int, ...]:
        """Calendar years the domain's periods lie in: the years a release is charged to."""
        return tuple(sorted({parse_period(p).year for p in self._columns[0].categories if p}))

    # --- encoding -----------------------------------------------------------------------

    def encode(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Integer codes (rows x columns) of the rows inside the domain, and their mask.

        Numeric values are clipped to ``[0, max]`` (a public rule); a row with a category or
        period outside the domain is dropped (``mask`` is False for it).
        """
        codes = np.empty((frame.height, len(self._columns)), dtype=np.int64)
        keep = np.ones(frame.height, dtype=bool)
        for j, col in enumerate(self._columns):
            series = frame.get_column(col.name)
            if col.numeric:
                values = series.cast(pl.Float64).to_numpy()
                present = np.isfinite(values)
                clipped = np.clip(np.where(present, values, 0.0), 0.0, col.edges[-1])
                bins = np.searchsorted(np.asarray(col.edges[1:]), clipped, side="left") + 1
                codes[:, j] = np.where(present, np.minimum(bins, col.size - 1), 0)
            else:
                mapping = {c: i for i, c in enumerate(col.categories) if c is not None}
                text = series.cast(pl.String)
                mapped = text.replace_strict(mapping, default=-1, return_dtype=pl.Int64)
                absent = col.absent_code
                if absent is not None:
                    mapped = pl.select(
                        pl.when(text.is_null()).then(absent).otherwise(mapped)
                    ).to_series()
                arr = mapped.fill_null(-1).to_numpy()
                keep &= arr >= 0
                codes[:, j] = arr
        return codes[keep], keep

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
        """Rows of :data:`COLUMNS` from codes; numeric values drawn inside their bin.

        Drawing a value inside a bin is sampling from the fitted (already private) model:
        post-processing, not privacy noise.
        """
        data: dict[str, Any] = {}
        for j, col in enumerate(self._columns):
            c = codes[:, j]
            if col.numeric:
                edges = np.asarray(col.edges)
                lo = edges[np.maximum(c - 1, 0)]
                hi = edges[np.minimum(c, col.size - 1)]
                u = rng.random(len(c))
                linear = lo + u * (hi - lo)
                log = np.exp(np.log(np.maximum(lo, edges[1])) + u * (
                    np.log(np.maximum(hi, edges[1])) - np.log(np.maximum(lo, edges[1]))))
                values = np.where(c == 1, linear, log)
                if col.name == "price_usd_t":  # prices are strictly positive
                    values = np.maximum(values, edges[1] * 1e-3)
                data[col.name] = pl.Series(
                    col.name, np.where(c == 0, np.nan, values), dtype=pl.Float64
                ).fill_nan(None)
            else:
                lookup = np.asarray([x if x is not None else "" for x in col.categories],
                                    dtype=object)
                texts = lookup[c]
                series = pl.Series(col.name, texts, dtype=pl.String)
                if col.absent_code is not None:
                    series = pl.select(
                        pl.when(series == "").then(None).otherwise(series).alias(col.name)
                    ).to_series()
                data[col.name] = series
        return pl.DataFrame(data).select(COLUMNS)

    def enforce_constraints(
        self, codes: np.ndarray, draw: Callable[[int, int], np.ndarray]
    ) -> np.ndarray:
        """Make sampled codes satisfy the standard's rules between fields (in place).

        * a trade flow has a partner country, any other flow none;
        * the price flow has a price and a contract type, other flows neither;
        * every flow but price has a quantity (optional on price).

        A value a rule requires but the sample lacks is drawn by ``draw(column, n)`` (the
        model's marginal without the "absent" code). Returns ``codes``.
        """
        flows = np.asarray(self._columns[3].categories, dtype=object)[codes[:, 3]]
        trade = np.isin(flows, list(_TRADE))
        price = flows == _PRICE
        for j, required, allowed in (
            (5, trade, trade),  # partner_country
            (6, price, price),  # contract_type
            (8, price, price),  # price_usd_t
            (7, ~price, np.ones_like(price)),  # quantity_t
        ):
            absent = self._columns[j].absent_code
            assert absent is not None
            codes[~allowed, j] = absent
            missing = required & (codes[:, j] == absent)
            if missing.any():
                codes[missing, j] = draw(j, int(missing.sum()))
        return codes


def to_polars(records: pl.DataFrame | pd.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """The records as a Polars frame of ``columns`` (raises if one is missing)."""
    frame = records if isinstance(records, pl.DataFrame) else pl.from_pandas(records)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SyntheticInputError(f"records lack the column(s) {', '.join(missing)}")
    return frame.select(columns)


def _unit_year() -> pl.Expr:
    return pl.concat_str(
        [pl.col("contribution_unit").cast(pl.String), pl.col("period").cast(pl.String)
         .str.slice(0, 4)],
        separator="|",
    )


def bound_contributions(
    records: pl.DataFrame | pd.DataFrame, *, rows_per_unit: int, seed: int | None = None
) -> pl.DataFrame:
    """At most ``rows_per_unit`` rows of every unit-year (a pseudo-random sample of its rows).

    The unit-year is the contribution unit (column ``contribution_unit``) and the calendar
    year of ``period``. A unit-year keeps its rows with the smallest seeded hash of the row's
    content, so which rows it keeps depends on its own rows and ``seed`` only (not on other
    rows, nor on row positions): removing one unit-year removes at most ``rows_per_unit``
    rows and changes no other row, the basis of every sensitivity bound in
    :mod:`synthetic`. Without ``seed`` the hash key is drawn at random.
    """
    if isinstance(rows_per_unit, bool) or not isinstance(rows_per_unit, int) or rows_per_unit < 1:
        raise SyntheticInputError(f"rows_per_unit must be an integer >= 1, got {rows_per_unit!r}")
    frame = to_polars(records, INPUT_COLUMNS)
    if frame["contribution_unit"].null_count():
        raise SyntheticInputError("contribution_unit must be given on every record")
    key_seed = int(np.random.default_rng(seed).integers(0, 2**62))
    keyed = frame.with_columns(
        _unit_year=_unit_year(),
        _order=pl.struct(list(INPUT_COLUMNS)).hash(seed=key_seed),
    )
    rank = pl.col("_order").rank("ordinal").over("_unit_year")
    return keyed.filter(rank <= rows_per_unit).drop("_unit_year", "_order")


def split_holdout(
    records: pl.DataFrame | pd.DataFrame, *, fraction: float = 0.2, seed: int | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split records by contribution unit into (training, holdout) for the evaluation.

    Whole units go to one side, so the holdout is a fair "control" set for the privacy
    attacks: none of its units is in the data the synthesizer saw.
    """
    if not 0 < fraction < 1:
        raise SyntheticInputError(f"fraction must be in (0, 1), got {fraction}")
    frame = records if isinstance(records, pl.DataFrame) else pl.from_pandas(records)
    units = frame["contribution_unit"].unique().sort()
    rng = np.random.default_rng(seed)
    chosen = units.gather(rng.permutation(len(units))[: max(1, round(len(units) * fraction))])
    mask = frame["contribution_unit"].is_in(chosen.implode())
    return frame.filter(~mask), frame.filter(mask)


def check_rows(frame: pl.DataFrame | pd.DataFrame, domain: PublicDomain) -> list[str]:
    """Every violation of the data standard's rules (and of ``domain``) in synthetic rows.

    Returns messages ``"row <i>: <rule>"``; an empty list means every row is valid.
    """
    rows = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    problems: list[str] = []
    allowed = {c.name: {x for x in c.categories if x is not None}
               for c in domain.columns if not c.numeric}
    quantity_max = domain.quantity_max_t
    price_max = domain.price_max_usd_t
    for i, row in enumerate(rows.select(COLUMNS).iter_rows(named=True)):
        for name in ("period", "commodity", "stage", "flow", "country"):
            if row[name] not in allowed[name]:
                problems.append(f"row {i}: {name} {row[name]!r} is not in the public domain")
        flow = row["flow"]
        partner, contract = row["partner_country"], row["contract_type"]
        quantity, price = row["quantity_t"], row["price_usd_t"]
        if flow in _TRADE:
            if partner not in allowed["partner_country"]:
                problems.append(f"row {i}: a {flow} needs a valid partner_country")
        elif partner is not None:
            problems.append(f"row {i}: partner_country on a {flow}")
        if flow == _PRICE:
            if price is None or not (0 < price <= price_max):
                problems.append(f"row {i}: a price needs 0 < price_usd_t <= {price_max}")
            if contract not in allowed["contract_type"]:
                problems.append(f"row {i}: a price needs a contract_type")
        else:
            if quantity is None:
                problems.append(f"row {i}: a {flow} needs quantity_t")
            if price is not None or contract is not None:
                problems.append(f"row {i}: price or contract_type on a {flow}")
        if quantity is not None and not (0 <= quantity <= quantity_max):
            problems.append(f"row {i}: quantity_t {quantity} is outside [0, {quantity_max}]")
    return problems


def as_reporting_records(frame: pl.DataFrame | pd.DataFrame) -> list[ReportingRecord]:
    """Synthetic rows as :class:`protocols.ReportingRecord` (validated by the standard).

    Quantities are contained tonnes (``unit="t"``, ``basis="contained"``), prices USD/t.
    Identifiers are synthetic (``syn-<i>``); each stock level gets its own synthetic site.
    """
    rows = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    out = []
    for i, row in enumerate(rows.select(COLUMNS).iter_rows(named=True)):
        quantity, price = row["quantity_t"], row["price_usd_t"]
        out.append(ReportingRecord(
            record_id=f"syn-{i}",
            period=row["period"],
            commodity=row["commodity"],
            stage=row["stage"],
            flow=row["flow"],
            country=row["country"],
            partner_country=row["partner_country"],
            quantity=quantity,
            unit="t" if quantity is not None else None,
            basis=Basis.CONTAINED if quantity is not None else None,
            price=price,
            price_unit="USD/t" if price is not None else None,
            contract_type=row["contract_type"],
            site_id=f"syn-site-{i}" if row["flow"] == str(Flow.STOCK_LEVEL) else None,
        ))
    return out
