"""Market indicators: plain, documented functions (docs/indicators.md has each worked example).

All shares are fractions (0..1); HHI is on the 0..1 scale (multiply by 10,000 for "points").
EU 2017 criticality: European Commission, "Methodology for establishing the EU list of
critical raw materials: guidelines" (2017, doi:10.2873/769526), with the background report
by Blengini et al. (JRC, EUR 28654 EN, 2017). Parameter values (trade factors, thresholds)
live in ``reference_data/eu_crm_2017.toml`` with their status.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "ChokeRules",
    "CompanyHHI",
    "EU2017Parameters",
    "ImportReliance",
    "anomaly_robust_z",
    "choke_point_reasons",
    "company_hhi",
    "economic_importance",
    "eol_rir",
    "eu2017_parameters",
    "hhi",
    "hhi_wgi_t",
    "import_reliance",
    "is_critical",
    "long_term_share",
    "price_volatility",
    "scale_wgi",
    "secondary_share",
    "shares",
    "stock_cover_days",
    "stocks_to_use",
    "substitution_index",
    "supply_risk",
    "top_share",
    "trade_parameter",
]


def shares(values: Mapping[str, float]) -> dict[str, float]:
    """Each key's share of the total (negative values count as 0)."""
    clean = {k: max(float(v), 0.0) for k, v in values.items()}
    total = sum(clean.values())
    if total <= 0:
        raise ValueError("shares of a zero total are undefined")
    return {k: v / total for k, v in clean.items()}


def hhi(share: Mapping[str, float] | Sequence[float]) -> float:
    """Herfindahl-Hirschman index ``sum s_i^2`` of shares (fractions summing to 1)."""
    values = list(share.values()) if isinstance(share, Mapping) else list(share)
    if not math.isclose(sum(values), 1.0, abs_tol=1e-9):
        raise ValueError(f"shares must sum to 1, not {sum(values)}")
    return float(sum(s * s for s in values))


@dataclass(frozen=True)
class CompanyHHI:
    """A company HHI from two pooled sums (:func:`company_hhi`), on the 0..1 scale.

    ``value``: ``raw`` clamped to ``[1 / companies, 1]`` (``clamped`` says whether it was);
    ``std``: root mean square and ``ci95``: 95% quantile of the simulated error of ``value``
    (``None`` when more than 5% of the draws have a non-positive total).
    """

    value: float
    raw: float
    clamped: bool
    std: float | None
    ci95: float | None


_HHI_DRAWS = 4000
_HHI_SEED = 20261122


def company_hhi(*, total: float, sum_of_squares: float, companies: int,
                total_std: float = 0.0, sum_of_squares_std: float = 0.0,
                draws: int = _HHI_DRAWS, seed: int = _HHI_SEED) -> CompanyHHI:
    """Company HHI ``S2 / S1^2`` from ``S1 = sum_i x_i`` and ``S2 = sum_i x_i^2``.

    With shares ``s_i = x_i / S1``, ``sum_i s_i^2 = S2 / S1^2``: the HHI needs only the two
    pooled sums, never a company's value (docs/indicators.md). Here ``x_i`` are the
    companies' (nodes') bounded cell totals, ``S1`` a pooled sum (``total``) and ``S2`` a
    pooled sum of squares (secure aggregation, statistic ``sum_of_squares``), both noisy.
    On the 0..1 scale of :func:`hhi` (x 10,000 for points). Example: companies 50, 30, 20:
    ``S1 = 100``, ``S2 = 2500 + 900 + 400 = 3800``, HHI ``3800 / 100^2 = 0.38`` (3,800).

    The true HHI of ``k`` companies with positive values lies in ``[1/k, 1]``; noise can take
    ``S2 / S1^2`` outside it, so the value is clamped to ``[1 / companies, 1]`` with
    ``companies`` the number of summed companies (``k <= companies``, so the clamp never
    excludes the true value) and ``clamped`` set.

    Error bar: a parametric bootstrap at the estimate, drawing Gaussian noise of std
    ``total_std`` and ``sum_of_squares_std`` independently on each sum (the pooled noise of
    secure aggregation is a sum of discrete Gaussians, Gaussian to within rounding), the
    *unclamped* ratio of each draw against ``raw``. Clamping to an interval that holds the
    true HHI never moves the estimate away from it, so this bar also bounds the clamped
    value's error; computed on clamped draws it would shrink near ``1/companies`` or 1
    exactly where the estimate is least certain. It covers DP noise only, not clipping bias
    (a company above the clip counts as the clip). Raises :class:`ValueError` when the noisy
    total is not positive (no HHI) or ``companies < 1``.
    """
    if companies < 1:
        raise ValueError("companies must be at least 1")
    if total <= 0:
        raise ValueError(f"the pooled total {total} is not positive: no HHI")
    low = 1.0 / companies

    def clamp(raw: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(raw, low, 1.0), dtype=float)

    raw = sum_of_squares / total**2
    value = float(clamp(np.array([raw]))[0])
    rng = np.random.default_rng(seed)
    s1 = total + rng.normal(0.0, total_std, size=draws) if total_std > 0 else np.full(
        draws, total)
    s2 = (sum_of_squares + rng.normal(0.0, sum_of_squares_std, size=draws)
          if sum_of_squares_std > 0 else np.full(draws, sum_of_squares))
    ok = s1 > 0
    if np.mean(~ok) > 0.05:
        return CompanyHHI(value, raw, value != raw, None, None)
    err = np.abs(s2[ok] / s1[ok] ** 2 - raw)
    err = np.concatenate([err, np.full(int(np.sum(~ok)), np.inf)])
    finite = err[np.isfinite(err)]
    return CompanyHHI(value=value, raw=raw, clamped=value != raw,
                      std=float(np.sqrt(np.mean(finite**2))),
                      ci95=float(np.quantile(err, 0.95)))


def top_share(share: Mapping[str, float] | Sequence[float], n: int = 3) -> float:
    """Combined share of the ``n`` largest (concentration ratio CR_n)."""
    values = sorted(share.values() if isinstance(share, Mapping) else share, reverse=True)
    return float(sum(values[:n]))


@dataclass(frozen=True)
class ImportReliance:
    """``raw = (imports - exports) / (production + imports - exports)``; ``clamped`` in [0, 1]."""

    raw: float | None
    clamped: float | None


def import_reliance(*, production: float, imports: float, exports: float) -> ImportReliance:
    """Net import reliance (EU 2017 guidelines, supply-risk section; also USGS NIR).

    The raw ratio is negative for net exporters and above 1 when apparent consumption is
    smaller than net imports (stock build-up); the EU method uses it clamped to [0, 1].
    Undefined (``None``) when apparent consumption ``production + imports - exports`` <= 0.
    """
    denominator = production + imports - exports
    if denominator <= 0:
        return ImportReliance(None, None)
    raw = (imports - exports) / denominator
    return ImportReliance(raw, min(max(raw, 0.0), 1.0))


def scale_wgi(raw: float) -> float:
    """World Bank WGI (-2.5 best-governed ... +2.5) rescaled to 0..10, 10 = poorest governance.

    ``(2.5 - raw) * 2``, clamped; the EU method uses the WGI on this 0-10 scale.
    """
    return min(max((2.5 - raw) * 2.0, 0.0), 10.0)


@dataclass(frozen=True)
class EU2017Parameters:
    """Parameters of the EU 2017 method (from ``reference_data/eu_crm_2017.toml``)."""

    ei_threshold: float
    sr_threshold: float
    restriction_factors: Mapping[str, float]
    agreement_factor: float
    status: str


@cache
def eu2017_parameters() -> EU2017Parameters:
    """The shipped parameter file."""
    text = resources.files("coordinator.reference_data").joinpath("eu_crm_2017.toml").read_text(
        encoding="utf-8")
    data: dict[str, Any] = tomllib.loads(text)
    return EU2017Parameters(
        ei_threshold=float(data["thresholds"]["economic_importance"]),
        sr_threshold=float(data["thresholds"]["supply_risk"]),
        restriction_factors={k: float(v) for k, v in data["trade"]["restriction"].items()},
        agreement_factor=float(data["trade"]["agreement_factor"]),
        status=str(data["meta"]["status"]),
    )


def trade_parameter(*, restrictions: Sequence[str] = (), eu_member_or_agreement: bool = False,
                    parameters: EU2017Parameters | None = None) -> float:
    """Trade-related variable ``t_c`` of a supplier country.

    ``t_c = max(factor of each export restriction in force, 1) * a_c`` where the factors are
    those of the parameter file (``export_tax``, ``export_quota``, ``export_prohibition``) and
    ``a_c`` is the agreement factor (0.8) for EU members and countries with an EU trade
    agreement, 1 otherwise.
    """
    p = parameters or eu2017_parameters()
    factor = max([1.0, *(p.restriction_factors[r] for r in restrictions)])
    return factor * (p.agreement_factor if eu_member_or_agreement else 1.0)


def hhi_wgi_t(*, share: Mapping[str, float], wgi_scaled: Mapping[str, float],
              t: Mapping[str, float] | None = None) -> float:
    """``HHI_WGI,t = sum_c (S_c)^2 * WGI_c * t_c`` (shares fractions, WGI scaled 0..10)."""
    hhi(share)  # validates the shares
    return float(sum(s * s * wgi_scaled[c] * (t or {}).get(c, 1.0) for c, s in share.items()))


def supply_risk(*, hhi_wgi_t_global: float, hhi_wgi_t_eu_sourcing: float, import_reliance: float,
                eol_rir: float, si_sr: float) -> float:
    """``SR = [HHI_GS * IR/2 + HHI_EUsourcing * (1 - IR/2)] * (1 - EOL_RIR) * SI_SR``.

    ``import_reliance`` is the clamped IR in [0, 1].
    """
    if not 0 <= import_reliance <= 1:
        raise ValueError("the EU method uses import reliance clamped to [0, 1]")
    ir = import_reliance
    return ((hhi_wgi_t_global * ir / 2 + hhi_wgi_t_eu_sourcing * (1 - ir / 2))
            * (1 - eol_rir) * si_sr)


def substitution_index(uses: Sequence[tuple[float, Sequence[tuple[float, float]]]]) -> float:
    """``SI = sum_a Share_a * sum_i (SubShare_a,i * SCP_a,i)`` over applications ``a``.

    Each application is ``(share, [(sub_share, scp), ...])``; the part of an application
    without a listed substitute counts with SCP 1 (no substitution).
    """
    total = 0.0
    for share, substitutes in uses:
        covered = sum(s for s, _ in substitutes)
        if covered > 1 + 1e-9:
            raise ValueError("sub-shares of one application exceed 1")
        total += share * (sum(s * scp for s, scp in substitutes) + (1 - covered))
    return total


def economic_importance(*, end_use_shares: Mapping[str, float],
                        value_added: Mapping[str, float], si_ei: float,
                        scale_by: float) -> float:
    """``EI = sum_s (A_s * Q_s) * SI_EI``, scaled to 0..10 as ``10 * EI / scale_by``.

    ``A_s``: share of the material's end use in NACE Rev. 2 sector ``s``; ``Q_s``: the sector's
    value added; ``scale_by``: value added of the largest manufacturing sector (so EI <= 10).
    """
    raw = sum(a * value_added[s] for s, a in end_use_shares.items()) * si_ei
    return 10.0 * raw / scale_by


def is_critical(*, economic_importance: float, supply_risk: float,
                parameters: EU2017Parameters | None = None) -> bool:
    """Critical when both EI and SR reach their thresholds (2017: EI >= 2.8, SR >= 1.0)."""
    p = parameters or eu2017_parameters()
    return economic_importance >= p.ei_threshold and supply_risk >= p.sr_threshold


def eol_rir(*, secondary_from_end_of_life: float, primary_input: float) -> float:
    """End-of-life recycling input rate: secondary (old scrap) / (primary + secondary) input."""
    total = secondary_from_end_of_life + primary_input
    if total <= 0:
        raise ValueError("no input")
    return secondary_from_end_of_life / total


def secondary_share(*, recycling_input: float, primary_production: float) -> float:
    """Share of secondary (recycled) supply: recycling input / (primary + recycling input)."""
    return eol_rir(secondary_from_end_of_life=recycling_input, primary_input=primary_production)


def stocks_to_use(*, stocks: float, use: float) -> float:
    """Stocks-to-use ratio: closing stocks / consumption of the year."""
    if use <= 0:
        raise ValueError("use must be positive")
    return stocks / use


def stock_cover_days(*, stocks: float, annual_consumption: float, days: float = 365.0) -> float:
    """Days of consumption the stocks cover: ``stocks / (annual consumption / days)``."""
    return stocks_to_use(stocks=stocks, use=annual_consumption) * days


def price_volatility(prices: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1) of log returns ``ln(p_t / p_{t-1})``, per period."""
    p = np.asarray(prices, dtype=float)
    if len(p) < 3 or np.any(p <= 0):
        raise ValueError("need at least three positive prices")
    return float(np.std(np.diff(np.log(p)), ddof=1))


def long_term_share(*, long_term: float, spot: float) -> float:
    """Share of long-term contracts in volume (or count): LT / (LT + spot)."""
    if long_term + spot <= 0:
        raise ValueError("no contracts")
    return long_term / (long_term + spot)


@dataclass(frozen=True)
class ChokeRules:
    """Thresholds of the choke-point rules (all configurable)."""

    hhi_min: float = 0.25  # "highly concentrated" (2,500 points)
    top3_min: float = 0.75
    import_reliance_min: float = 0.5
    stock_cover_days_max: float = 30.0
    trend_max: float = -0.10  # year-on-year change of production at or below -10%
    min_conditions: int = 2  # flag when at least this many conditions hold


def choke_point_reasons(*, hhi_value: float | None, top3: float | None,
                        import_reliance_value: float | None, cover_days: float | None,
                        trend: float | None, rules: ChokeRules | None = None) -> list[str]:
    """Reasons a commodity x stage is a potential choke point (empty: not flagged)."""
    r = rules or ChokeRules()
    reasons = []
    if hhi_value is not None and hhi_value >= r.hhi_min:
        reasons.append(f"concentration: HHI {hhi_value:.2f} >= {r.hhi_min:.2f}")
    if top3 is not None and top3 >= r.top3_min:
        reasons.append(f"concentration: top-3 share {top3:.0%} >= {r.top3_min:.0%}")
    if import_reliance_value is not None and import_reliance_value >= r.import_reliance_min:
        reasons.append(f"import reliance {import_reliance_value:.0%} >= "
                       f"{r.import_reliance_min:.0%}")
    if cover_days is not None and cover_days <= r.stock_cover_days_max:
        reasons.append(f"stock cover {cover_days:.0f} days <= {r.stock_cover_days_max:.0f}")
    if trend is not None and trend <= r.trend_max:
        reasons.append(f"production trend {trend:+.0%} <= {r.trend_max:+.0%}")
    conditions = len({reason.split(":")[0].split(" ")[0] for reason in reasons})
    return reasons if conditions >= r.min_conditions else []


def anomaly_robust_z(history: Sequence[float], value: float) -> float | None:
    """Robust z-score of ``value`` against ``history``: ``0.6745 (x - median) / MAD``.

    (Iglewicz and Hoaglin, 1993; |z| > 3.5 is the usual flag.) ``None`` with fewer than three
    history points; when the MAD is 0 the mean absolute deviation (x 1.2533) stands in.
    """
    h = np.asarray(history, dtype=float)
    if len(h) < 3:
        return None
    med = float(np.median(h))
    mad = float(np.median(np.abs(h - med)))
    if mad > 0:
        return 0.6745 * (value - med) / mad
    meanad = float(np.mean(np.abs(h - med)))
    if meanad > 0:
        return (value - med) / (1.2533 * meanad)
    return 0.0 if value == med else math.copysign(math.inf, value - med)
