"""Rolling forecasts of annual series whose intervals include the DP noise of the history.

Model: Holt's linear-trend exponential smoothing (statsmodels ``ExponentialSmoothing`` with
an additive, damped trend). Intervals: the observed history is itself noisy, so we
(1) draw ``refits`` noisy versions of the history, ``y* = y + e*`` with ``e*`` Laplace of the
published error (``b = std / sqrt(2)`` per point: public parameters), (2) refit the model to
each, (3) simulate ``paths`` future paths of each fit (model innovations), and (4) take the
2.5% and 97.5% quantiles of all pooled paths. The spread therefore holds model uncertainty,
innovation noise and the DP noise of the inputs. Seeded: a deterministic function of the
published figures.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from coordinator._market_models import Forecast, ForecastPoint
from protocols import Commodity

__all__ = ["forecast_series"]


def _fit_simulate(y: np.ndarray, horizon: int, paths: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small annual series: optimiser notes are expected
        fit = ExponentialSmoothing(y, trend="add", damped_trend=True,
                                   initialization_method="estimated").fit()
        point = np.asarray(fit.forecast(horizon), dtype=float)
        sims = np.asarray(fit.simulate(horizon, repetitions=paths, error="add",
                                       random_state=rng), dtype=float)
    return point, sims.reshape(horizon, paths)


def forecast_series(*, commodity: Commodity, name: str, periods: Sequence[str],
                    values: Sequence[float], noise_std: Sequence[float], horizon: int = 5,
                    refits: int = 20, paths: int = 50, seed: int = 20240601) -> Forecast:
    """Forecast ``horizon`` years after the last of ``periods`` (calendar years, >= 4 points)."""
    if len(values) < 4 or len(values) != len(periods) or len(noise_std) != len(values):
        raise ValueError("need at least four years, with one noise std per year")
    years = [int(p) for p in periods]
    if years != list(range(years[0], years[0] + len(years))):
        raise ValueError("periods must be consecutive calendar years")
    rng = np.random.default_rng(seed)
    y = np.asarray(values, dtype=float)
    b = np.asarray(noise_std, dtype=float) / np.sqrt(2.0)
    point, _ = _fit_simulate(y, horizon, 1, rng)
    pooled = []
    for _ in range(refits):
        noisy = np.maximum(y + rng.laplace(0.0, 1.0, size=len(y)) * b, 0.0)
        _, sims = _fit_simulate(noisy, horizon, paths, rng)
        pooled.append(sims)
    allsims = np.concatenate(pooled, axis=1)
    allsims[~np.isfinite(allsims)] = np.nan  # a degenerate refit (flat series) gives no paths
    low, high = point.copy(), point.copy()
    for h in range(horizon):
        finite = allsims[h][~np.isnan(allsims[h])]
        if finite.size:
            low[h], high[h] = np.quantile(finite, [0.025, 0.975])
    return Forecast(
        commodity=commodity, series=name,
        method=f"Holt damped-trend exponential smoothing; 95% interval from {refits} refits on "
               f"DP-noise draws x {paths} simulated paths",
        history=[(str(p), float(v)) for p, v in zip(periods, values, strict=True)],
        points=[ForecastPoint(period=str(years[-1] + h + 1), value=float(max(point[h], 0.0)),
                              low=float(max(min(low[h], point[h]), 0.0)),
                              high=float(max(high[h], point[h])))
                for h in range(horizon)],
    )
