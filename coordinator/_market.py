"""From pooled balances (and price results) to the market report: indicators, material flows,
choke points, anomalies and forecasts. Pure post-processing of published figures.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Sequence

import numpy as np

from coordinator._hierarchy import EU27, WORLD, region_table
from coordinator._indicators import (
    ChokeRules,
    anomaly_robust_z,
    choke_point_reasons,
    hhi,
    hhi_wgi_t,
    import_reliance,
    secondary_share,
    shares,
    stock_cover_days,
    stocks_to_use,
    supply_risk,
    top_share,
)
from coordinator._market_models import (
    BASE_FIGURES,
    AnomalyFlag,
    ChokePoint,
    Forecast,
    IndicatorValue,
    Level,
    MarketReport,
    ReconciledBalance,
    ReconciledFigure,
    SankeyData,
    SankeyLink,
)
from coordinator._models import Balance, CellStatus, PooledResult, PriceFigure
from coordinator._prices import (
    ALL_CONTRACTS,
    NoisySum,
    is_vwap_pair,
    long_term_share_error,
    statistic_error,
    vwap_cells,
    vwap_figures,
)
from coordinator._reconcile import reconcile_balance
from coordinator._reference import ReferenceInputs, reference_inputs
from protocols import (
    AggregateQuery,
    Bounds,
    Commodity,
    ContractType,
    Flow,
    Measure,
    QueryKind,
    parse_period,
)

__all__ = [
    "SANKEY_NODES",
    "anomaly_flags",
    "build_market_report",
    "eu_sourcing_query",
    "eu_sourcing_shares",
    "is_eu_sourcing",
    "market_indicators",
    "material_flows",
    "price_indicators",
    "price_query",
    "price_series",
    "vwap_series",
]

SANKEY_NODES = ["mining", "refining", "manufacturing", "use", "end_of_life", "waste"]
_CHAIN = ["mining", "refining", "manufacturing", "use"]


def _value(fig: ReconciledFigure | None) -> float | None:
    if fig is None or fig.status is not CellStatus.PUBLISHED:
        return None
    return fig.value


def material_flows(balance: ReconciledBalance, *, area: str = WORLD) -> SankeyData:
    """Mining -> refining -> manufacturing -> use -> end-of-life of one area, for a Sankey.

    * ``stage -> next stage``: the stage's apparent consumption (its output used in the area:
      production + imports - exports - stock change), i.e. what the next stage takes in;
    * ``use -> end_of_life``: recycling input collected at the end-of-life stage;
    * ``end_of_life -> refining``: end-of-life production (secondary material back to refining);
    * ``stage -> waste``: waste of each stage.

    Links whose figure is not published are left out (and named in ``note``).
    """
    links: list[SankeyLink] = []
    missing: list[str] = []

    def add(source: str, target: str, stage: str, figure: str) -> None:
        row = balance.row(area, stage)
        fig = row.figure(figure) if row else None
        v = _value(fig)
        if v is None or fig is None:
            if row is not None:
                missing.append(f"{source}->{target}")
            return
        if v > 0:
            links.append(SankeyLink(source=source, target=target, value=v, std=fig.std,
                                    figure=f"{stage}.{figure}"))

    for a, b in itertools.pairwise(_CHAIN):
        add(a, b, a, "apparent_consumption")
    add("use", "end_of_life", "end_of_life", "recycling_input")
    add("end_of_life", "refining", "end_of_life", "production")
    for stage in [*_CHAIN, "end_of_life"]:
        add(stage, "waste", stage, "waste")
    note = ("not published (suppressed or partial): " + ", ".join(missing)) if missing else ""
    return SankeyData(commodity=balance.commodity, period=balance.period, area=area,
                      nodes=SANKEY_NODES, links=links, note=note)


def _country_values(balance: ReconciledBalance, stage: str, figure: str
                    ) -> tuple[dict[str, float], list[str]]:
    values, missing = {}, []
    for row in balance.rows:
        if row.level is Level.COUNTRY and row.stage == stage:
            fig = row.figure(figure)
            if fig.status is CellStatus.PUBLISHED and fig.value is not None:
                values[row.area] = fig.value
            elif fig.status is CellStatus.SUPPRESSED:
                missing.append(row.area)
    return values, missing


def eu_sourcing_query(*, commodity: Commodity, year: int, epsilon: float,
                      unit_sum_bound: float, min_contributors: int = 3,
                      purpose: str = "pooled EU27 sourcing (imports by partner)"
                      ) -> AggregateQuery:
    """Imports into the EU27 countries, grouped by stage x partner country, for one year.

    The sourcing side of the EU 2017 supply risk (``HHI_WGI,t(EU sourcing)``): with the EU
    members' own production from the balance it gives the EU's supply mix. ``unit_sum_bound``
    is the flows bound of the balance (tonnes a site-year contributes in total).
    """
    return AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": [commodity],
        "flows": [Flow.IMPORT], "periods": [str(year)],
        "countries": sorted(region_table().eu27),
        "group_by": ["stage", "partner_country"], "epsilon": epsilon,
        "min_contributors": min_contributors, "purpose": purpose,
        "bounds": Bounds(record_clip=unit_sum_bound, unit_sum_bound=unit_sum_bound),
    })


def is_eu_sourcing(query: AggregateQuery) -> bool:
    """Whether ``query`` is an :func:`eu_sourcing_query` (imports into the EU27 by partner)."""
    return (list(query.flows) == [Flow.IMPORT] and query.kind is QueryKind.SUM
            and list(query.group_by) == ["stage", "partner_country"]
            and query.countries is not None and set(query.countries) == region_table().eu27
            and len(query.commodities) == 1 and len(query.periods) == 1)


def eu_sourcing_shares(balance: ReconciledBalance, sourcing: PooledResult, stage: str
                       ) -> tuple[dict[str, float], list[str]]:
    """The EU27's supply mix at ``stage``: members' production plus extra-EU imports.

    Domestic part: post-processed production of each EU27 member (published country rows).
    Imports: the sourcing result's cells of partners outside the EU27 (intra-EU trade is
    not supply to the EU). A noisy import cell counts only when it exceeds its own 95%
    half-width (cells of partners nobody imports from are pure noise and would otherwise
    add spurious small suppliers). Returns the shares and notes on what was left out.
    """
    eu = region_table().eu27
    supply: dict[str, float] = {}
    notes: list[str] = []
    suppressed = []
    for row in balance.rows:
        if row.level is Level.COUNTRY and row.stage == stage and row.area in eu:
            v = _value(row.production)
            if v is not None and v > 0:
                supply[row.area] = v
            elif row.production.status is CellStatus.SUPPRESSED:
                suppressed.append(row.area)
    below = 0
    for cell in sourcing.cells:
        cell_stage, partner = cell.key
        if cell_stage != stage or partner in eu:
            continue
        if cell.status is CellStatus.SUPPRESSED:
            suppressed.append(partner)
        elif cell.status is CellStatus.PUBLISHED and cell.value is not None:
            if cell.value > (cell.ci95 or 0.0):
                supply[partner] = supply.get(partner, 0.0) + cell.value
            elif cell.value > 0:
                below += 1
    if suppressed:
        notes.append(f"suppressed suppliers left out: {', '.join(sorted(suppressed))}")
    if below:
        notes.append(f"{below} partner cells within their noise (below the 95% half-width) "
                     "counted as zero")
    return (shares(supply) if supply and sum(supply.values()) > 0 else {}), notes


def _hhi_wgi_t_of(share: dict[str, float], commodity: Commodity, ref: ReferenceInputs
                  ) -> tuple[float | None, list[str]]:
    """HHI_WGI,t of shares, or ``None`` with the suppliers that have no WGI value."""
    missing = sorted(k for k, v in share.items() if k not in ref.wgi_scaled and v > 0)
    if not share or missing:
        return None, missing
    return hhi_wgi_t(share=share, wgi_scaled=ref.wgi_scaled,
                     t={k: ref.t(str(commodity), k) for k in share}), []


def market_indicators(balance: ReconciledBalance, *,
                      sourcing: PooledResult | None = None) -> list[IndicatorValue]:
    """Concentration, import reliance, stocks, secondary share, prices of one balance, and
    the EU 2017 supply risk when ``sourcing`` (an :func:`eu_sourcing_query` result of the
    same commodity and year) is given."""
    out: list[IndicatorValue] = []
    c, p = balance.commodity, balance.period
    ref = reference_inputs()

    def put(name: str, scope: str, value: float | None, note: str = "",
            raw: float | None = None, std: float | None = None) -> None:
        out.append(IndicatorValue(name=name, commodity=c, period=p, scope=scope, value=value,
                                  raw_value=raw, std=std, note=note))

    for stage in ("mining", "refining"):
        values, missing = _country_values(balance, stage, "production")
        if sum(values.values()) <= 0:
            continue
        s = shares(values)
        note = (f"countries with suppressed production left out: {', '.join(missing)}"
                if missing else "")
        put("hhi_country", f"World / {stage}", hhi(s), note)
        put("top3_share_country", f"World / {stage}", top_share(s, 3), note)
        known = {k: v for k, v in s.items() if k in ref.wgi_scaled}
        if known and math.isclose(sum(known.values()), 1.0):
            put("hhi_wgi_t_global", f"World / {stage}",
                hhi_wgi_t(share=s, wgi_scaled=ref.wgi_scaled,
                          t={k: ref.t(str(c), k) for k in s}),
                "ILLUSTRATIVE reference WGI and trade data" if ref.illustrative else "")
    for area in (EU27, WORLD):
        for stage in ("mining", "refining"):
            row = balance.row(area, stage)
            if row is None:
                continue
            prod, imp, exp = (_value(row.production), _value(row.imports), _value(row.exports))
            partial = any(row.figure(f).partial for f in ("production", "imports", "exports"))
            if None not in (prod, imp, exp) and not partial:
                assert prod is not None and imp is not None and exp is not None
                ir = import_reliance(production=prod, imports=imp, exports=exp)
                put("import_reliance", f"{area} / {stage}", ir.clamped,
                    "raw_value unclamped; clamped to [0, 1]", raw=ir.raw)
            use = _value(row.apparent_consumption)
            stock = _value(row.closing_stock)
            if use and use > 0 and stock is not None and not row.closing_stock.partial:
                put("stocks_to_use", f"{area} / {stage}", stocks_to_use(stocks=stock, use=use))
                put("stock_cover_days", f"{area} / {stage}",
                    stock_cover_days(stocks=stock, annual_consumption=use),
                    "closing stock / (apparent consumption / 365)")
            if row.apparent_consumption.status is CellStatus.PUBLISHED:
                put("apparent_consumption", f"{area} / {stage}",
                    row.apparent_consumption.value, std=row.apparent_consumption.std,
                    raw=row.apparent_consumption.raw_value)
    world_mining = balance.row(WORLD, "mining")
    recycled = [_value(r.recycling_input) for r in balance.rows
                if r.level is Level.WORLD and not r.recycling_input.partial]
    primary = _value(world_mining.production) if world_mining else None
    total_recycled = sum(v for v in recycled if v is not None)
    if primary is not None and (primary + total_recycled) > 0:
        put("secondary_share", "World", secondary_share(recycling_input=total_recycled,
                                                       primary_production=primary),
            "recycling input (all stages) / (mining production + recycling input); also used "
            "as the end-of-life recycling input rate (EOL-RIR) proxy")
    if balance.prices:
        out += price_indicators(c, balance.prices)
    if sourcing is not None:
        out += _supply_risk(balance, sourcing, out, ref)
    return out


def _supply_risk(balance: ReconciledBalance, sourcing: PooledResult,
                 indicators: list[IndicatorValue], ref: ReferenceInputs
                 ) -> list[IndicatorValue]:
    """``HHI_WGI,t(EU sourcing)`` and the EU 2017 supply risk per stage (mining, refining)."""
    c, p = balance.commodity, balance.period
    label = "ILLUSTRATIVE reference WGI, trade and substitution data" if ref.illustrative else ""
    out: list[IndicatorValue] = []

    def find(name: str, scope: str) -> float | None:
        return next((i.value for i in indicators if i.name == name and i.scope == scope), None)

    for stage in ("mining", "refining"):
        share, notes = eu_sourcing_shares(balance, sourcing, stage)
        eu_hhi, no_wgi = _hhi_wgi_t_of(share, c, ref)
        scope = f"{EU27} / {stage}"
        if no_wgi:
            notes.append(f"no WGI value for {', '.join(no_wgi)}: not computed")
        if not share:
            continue
        out.append(IndicatorValue(name="hhi_wgi_t_eu_sourcing", commodity=c, period=p,
                                  scope=scope, value=eu_hhi,
                                  note="; ".join([n for n in (label, *notes) if n])))
        terms = {
            "HHI_WGI,t(global)": find("hhi_wgi_t_global", f"World / {stage}"),
            "HHI_WGI,t(EU sourcing)": eu_hhi,
            "IR": find("import_reliance", scope),
            "EOL-RIR": find("secondary_share", "World"),
            "SI_SR": ref.si_sr.get(str(c)),
        }
        absent = [k for k, v in terms.items() if v is None]
        if absent:
            out.append(IndicatorValue(name="supply_risk", commodity=c, period=p, scope=scope,
                                      value=None, note=f"not computed: no {', '.join(absent)}"))
            continue
        g, e, ir, rir, si = (float(v) for v in terms.values())  # type: ignore[arg-type]
        out.append(IndicatorValue(
            name="supply_risk", commodity=c, period=p, scope=scope,
            value=supply_risk(hhi_wgi_t_global=g, hhi_wgi_t_eu_sourcing=e, import_reliance=ir,
                              eol_rir=rir, si_sr=si),
            note="EU 2017: [HHI_WGI,t(global) IR/2 + HHI_WGI,t(EU sourcing) (1 - IR/2)] "
                 "(1 - EOL-RIR) SI_SR; EOL-RIR proxied by the secondary share"
                 + (f"; {label}" if label else "")))
    return out


def price_indicators(commodity: Commodity, figures: Sequence[PriceFigure]
                     ) -> list[IndicatorValue]:
    """Volume-weighted prices by contract type and the long-term share of priced tonnes."""
    out = []
    for f in figures:
        if f.status is CellStatus.PUBLISHED and f.value is not None:
            out.append(IndicatorValue(
                name="vwap_usd_t", commodity=commodity, period=f.period,
                scope=f"World / {f.contract_type}", value=f.value, std=f.std,
                note="volume-weighted: sum(price x quantity) / sum(quantity)"))
    by_period: dict[str, dict[str, PriceFigure]] = {}
    for f in figures:
        by_period.setdefault(f.period, {})[f.contract_type] = f
    for period, parts in sorted(by_period.items()):
        lt, spot = parts.get(str(ContractType.LONG_TERM)), parts.get(str(ContractType.SPOT))
        if (lt is None or spot is None or lt.status is not CellStatus.PUBLISHED
                or spot.status is not CellStatus.PUBLISHED):
            continue
        share, std, _ = long_term_share_error(
            NoisySum(lt.tonnes or 0.0, tuple(lt.tonnes_noise_scales)),
            NoisySum(spot.tonnes or 0.0, tuple(spot.tonnes_noise_scales)))
        if share is not None:
            out.append(IndicatorValue(name="long_term_share", commodity=commodity,
                                      period=period, scope="World", value=share, std=std,
                                      note="long-term / all priced tonnes"))
    return out


def anomaly_flags(balances: Sequence[ReconciledBalance], *, z_history: float = 3.5,
                  z_identity: float = 3.0) -> list[AnomalyFlag]:
    """Figures that break with their own history (robust z) or with other flows.

    * history: each published base figure of the latest year against the same figure of the
      earlier years (at least three), robust z-score above ``z_history``;
    * identity: reported consumption against apparent consumption of the same row, and world
      imports against world exports, differences above ``z_identity`` error bars.
    """
    flags: list[AnomalyFlag] = []
    by_commodity: dict[Commodity, list[ReconciledBalance]] = {}
    for b in balances:
        by_commodity.setdefault(b.commodity, []).append(b)
    for commodity, series in by_commodity.items():
        series.sort(key=lambda b: b.period)
        latest = series[-1]
        for row in latest.rows:
            for name in BASE_FIGURES:
                v = _value(row.figure(name))
                if v is None:
                    continue
                history = []
                for old in series[:-1]:
                    r = old.row(row.area, row.stage)
                    hv = _value(r.figure(name)) if r else None
                    if hv is not None:
                        history.append(hv)
                z = anomaly_robust_z(history, v)
                if z is not None and abs(z) > z_history:
                    flags.append(AnomalyFlag(
                        commodity=commodity, area=row.area, stage=row.stage, figure=name,
                        period=latest.period, kind="history", score=z,
                        message=f"{name} {v:,.0f} t is {z:+.1f} robust z from its "
                                f"{len(history)}-year history"))
        for b in series:
            for row in b.rows:
                pairs = [("consumption", row.consumption, row.apparent_consumption)]
                if row.level is Level.WORLD:
                    pairs.append(("imports-exports", row.imports, row.exports))
                for label, a, c in pairs:
                    va, vc = _value(a), _value(c)
                    if va is None or vc is None or a.partial or c.partial:
                        continue
                    sd = math.sqrt((a.std or 0.0) ** 2 + (c.std or 0.0) ** 2)
                    if sd <= 0:
                        continue
                    z = (va - vc) / sd
                    if abs(z) > z_identity:
                        flags.append(AnomalyFlag(
                            commodity=commodity, area=row.area, stage=row.stage, figure=label,
                            period=b.period, kind="identity", score=z,
                            message=f"{label}: difference {va - vc:,.0f} t is {z:+.1f} error "
                                    "bars from zero"))
    return flags


def price_query(*, commodity: Commodity, year: int, epsilon: float, price_bound: float,
                min_contributors: int = 3) -> AggregateQuery:
    """The MEAN price query of one year by month (``price_usd_t`` on the price flow).

    Not volume-weighted: each price record counts once (see docs/indicators.md).
    """
    months = [f"{year}-{m:02d}" for m in range(1, 13)]
    return AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "mean", "measure": Measure.PRICE,
        "commodities": [commodity], "flows": [Flow.PRICE], "periods": months,
        "group_by": ["period"], "epsilon": epsilon, "min_contributors": min_contributors,
        "bounds": Bounds(record_clip=price_bound, unit_sum_bound=price_bound * 12),
        "purpose": "pooled monthly mean price",
    })


def vwap_series(value: PooledResult, quantity: PooledResult) -> list[IndicatorValue]:
    """Prices of a :func:`coordinator.vwap_queries` pair: VWAP per contract type and period,
    the long-term share of priced tonnes per period and over all periods, and the
    volatility of the monthly VWAP of all contracts (log returns, error by simulation)."""
    commodity = value.query.commodities[0]
    out = price_indicators(commodity, vwap_figures(value, quantity))
    cells = vwap_cells(value, quantity)
    periods = list(value.query.periods)
    years = sorted({str(parse_period(x).year) for x in periods})
    if len(periods) > 1:
        lt = spot = NoisySum(0.0, ())
        complete = True
        for x in periods:
            for contract in ContractType:
                status, _, q = cells[(str(contract), x)]
                if status is CellStatus.SUPPRESSED:
                    complete = False
                elif q is not None:
                    if contract is ContractType.LONG_TERM:
                        lt = lt + q
                    else:
                        spot = spot + q
        share, std, _ = long_term_share_error(lt, spot)
        if complete and share is not None:
            out.append(IndicatorValue(name="long_term_share", commodity=commodity,
                                      period="/".join(years), scope="World (all periods)",
                                      value=share, std=std,
                                      note="long-term / all priced tonnes"))
    monthly = [(x, cells[(ALL_CONTRACTS, x)]) for x in periods]
    usable = [(x, v, q) for x, (status, v, q) in monthly
              if status is CellStatus.PUBLISHED and v is not None and q is not None]
    if len(usable) >= 3:
        n = len(usable)
        sums = [v for _, v, _ in usable] + [q for _, _, q in usable]

        def volatility(a: Sequence[np.ndarray]) -> np.ndarray:
            prices = np.stack([a[i] / a[n + i] for i in range(n)])
            out_: np.ndarray = np.std(np.diff(np.log(prices), axis=0), axis=0, ddof=1)
            return out_

        def positive(a: Sequence[np.ndarray]) -> np.ndarray:
            ok: np.ndarray = np.all(np.stack([a[i] > 0 for i in range(2 * n)]), axis=0)
            return ok

        vol, std, _ = statistic_error(volatility, sums, valid=positive)
        if vol is not None:
            gaps = len(usable) < len(periods)
            out.append(IndicatorValue(
                name="price_volatility", commodity=commodity,
                period=f"{usable[0][0]}/{usable[-1][0]}", scope="World / all contracts",
                value=vol, std=std,
                note="sample std of log returns of the monthly VWAP"
                     + ("; months without a published price skipped" if gaps else "")))
    return out


def price_series(result: PooledResult) -> list[IndicatorValue]:
    """Monthly mean prices of a :func:`price_query` result (published months only)."""
    commodity = result.query.commodities[0]
    out = []
    for cell in result.cells:
        if cell.status is CellStatus.PUBLISHED and cell.value is not None:
            period = cell.key[0]
            parse_period(period)
            out.append(IndicatorValue(name="mean_price_usd_t", commodity=commodity,
                                      period=period, scope="World", value=cell.value,
                                      std=cell.std, note="mean of price records, not "
                                      "volume-weighted"))
    return out


def _route(results: Sequence[PooledResult]) -> tuple[list[PooledResult],
                                                     list[tuple[PooledResult, PooledResult]],
                                                     list[PooledResult]]:
    """(mean price results, VWAP (value, quantity) pairs, EU sourcing results)."""
    means = [r for r in results if r.query.kind is QueryKind.MEAN
             and r.query.measure is Measure.PRICE]
    sourcing = [r for r in results if is_eu_sourcing(r.query)]
    values = [r for r in results if r.query.measure is Measure.VALUE]
    quantities = [r for r in results if r.query.measure is Measure.QUANTITY
                  and list(r.query.flows) == [Flow.PRICE]]
    pairs = []
    for v in values:
        match = next((q for q in quantities if is_vwap_pair(v, q)), None)
        if match is not None:
            quantities.remove(match)
            pairs.append((v, match))
    return means, pairs, sourcing


def build_market_report(balances: Sequence[Balance], *, prices: Sequence[PooledResult] = (),
                        sourcing: Sequence[PooledResult] = (),
                        rules: ChokeRules | None = None, draws: int = 400,
                        forecast: bool = True) -> MarketReport:
    """Post-process every balance and compute the report's indicators, flows and flags.

    ``prices`` and ``sourcing`` hold pooled results, recognised by their query: monthly mean
    prices (:func:`price_query`), volume-weighted price pairs (:func:`vwap_queries`) and EU
    sourcing (:func:`eu_sourcing_query`, matched to the balance of its commodity and year).
    """
    from coordinator._forecast import forecast_series  # statsmodels: imported when needed

    means, pairs, eu_sourcing = _route([*prices, *sourcing])
    sourcing_of = {(r.query.commodities[0], r.query.periods[0]): r for r in eu_sourcing}
    reconciled = [reconcile_balance(b, draws=draws) for b in balances]
    indicators = [i for b in reconciled for i in market_indicators(
        b, sourcing=sourcing_of.get((b.commodity, b.period)))]
    sankeys = [material_flows(b) for b in reconciled]
    choke: list[ChokePoint] = []
    forecasts: list[Forecast] = []
    notes: list[str] = []
    by_commodity: dict[Commodity, list[ReconciledBalance]] = {}
    for b in reconciled:
        by_commodity.setdefault(b.commodity, []).append(b)
    for commodity, series in by_commodity.items():
        series.sort(key=lambda b: b.period)
        latest = series[-1]
        for stage in ("mining", "refining"):
            def ind(name: str, scope: str, period: str = latest.period,
                    commodity: Commodity = commodity) -> float | None:
                for i in indicators:
                    if (i.commodity == commodity and i.period == period and i.name == name
                            and i.scope == scope):
                        return i.value
                return None
            trend = None
            if len(series) >= 2:
                now = series[-1].row(WORLD, stage)
                before = series[-2].row(WORLD, stage)
                a = _value(now.production) if now else None
                b0 = _value(before.production) if before else None
                if a is not None and b0:
                    trend = a / b0 - 1
            reasons = choke_point_reasons(
                hhi_value=ind("hhi_country", f"World / {stage}"),
                top3=ind("top3_share_country", f"World / {stage}"),
                import_reliance_value=ind("import_reliance", f"{EU27} / {stage}"),
                cover_days=ind("stock_cover_days", f"{WORLD} / {stage}"),
                trend=trend, rules=rules)
            if reasons:
                choke.append(ChokePoint(commodity=commodity, stage=stage,
                                        period=latest.period, reasons=reasons))
        if forecast:
            years, values, stds = [], [], []
            for b in series:
                row = b.row(WORLD, "mining")
                fig = row.production if row else None
                if fig is not None and fig.status is CellStatus.PUBLISHED and not fig.partial:
                    years.append(b.period)
                    values.append(fig.value or 0.0)
                    stds.append(fig.std or 0.0)
            consecutive = [int(y) for y in years] == list(
                range(int(years[0]), int(years[0]) + len(years))) if years else False
            if len(years) >= 4 and consecutive:
                forecasts.append(forecast_series(commodity=commodity,
                                                 name="World mining production",
                                                 periods=years, values=values, noise_std=stds))
            else:
                notes.append(f"{commodity}: no forecast (needs >= 4 consecutive years of "
                             "complete world mining production)")
    price_values = [v for r in means for v in price_series(r)]
    for value, quantity in pairs:
        price_values += vwap_series(value, quantity)
    if reference_inputs().illustrative:
        notes.append("HHI_WGI,t and the supply risk use ILLUSTRATIVE reference data (WGI, "
                     "trade, substitution; reference_data/README.md)")
    return MarketReport(balances=reconciled, indicators=indicators, choke_points=choke,
                        anomalies=anomaly_flags(reconciled), forecasts=forecasts,
                        sankeys=sankeys, prices=price_values, notes=notes)
