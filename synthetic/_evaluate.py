"""The evaluation of a synthetic release, computed at the node before release.

Quality: SDMetrics' (unified) ``QualityReport`` on one table (column shapes, column pair trends) of
the synthetic rows against the training records.

Privacy risk: the three attacks of Anonymeter (Giomi et al., "A Unified Framework for
Quantifying Privacy Risk in Synthetic Data", PoPETs 2023), *re-implemented after the paper*
(Anonymeter itself pins numpy<1.27 and cannot share this environment). Every attack is run
twice: against the training records (the records the synthesizer saw) and against a
control set of held-out records it never saw. The control attack measures what the
synthetic data reveals about the *population*; only the excess is privacy risk:

    risk = (r_train - r_control) / (1 - r_control)

with each success rate ``r`` estimated by the Wilson score interval and the risk's
uncertainty propagated from both (first-order), as in the paper. Distances are Gower
distances (categorical mismatch 0/1; numeric: |difference| of log1p-scaled values in
[0, 1]; missing vs present 1).

* Singling out (multivariate): predicates built from random synthetic rows (a conjunction
  over ``predicate_columns`` columns: equality for categories, ``>=`` / ``<=`` the value for
  numbers) that isolate exactly one synthetic row; success when a predicate isolates
  exactly one record of the training sample, resp. of the control set (synthetic rows and
  training records are subsampled to the control set's size).
* Linkability: a target's two halves of columns are each matched to their nearest
  synthetic rows (the ``n_neighbors`` nearest, ties at the last distance included);
  success when the two sets of neighbours share a row.
* Inference: a target's secret column is guessed from its nearest synthetic row on the
  other columns; success when the guess is right (numbers within 5 % relative).
* Distance to closest record (DCR): for synthetic rows, distance to the closest training
  record vs to the closest holdout record (equal-size sets); the share of synthetic rows
  closer to training than to holdout is 0.5 for a synthesizer that does not memorise.

Nothing in an :class:`EvaluationReport` is a row or a value of a row: only scores, rates and
intervals. The scores are computed on the real records without noise: they are not DP, so
release them only as the node owner's :class:`EvaluationPolicy` allows, rounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from scipy.stats import norm

from synthetic._domain import COLUMNS
from synthetic._errors import EvaluationError

__all__ = [
    "DEFAULT_LINK_COLUMNS",
    "DcrScores",
    "EvaluationPolicy",
    "EvaluationReport",
    "QualityScores",
    "RiskEstimate",
    "evaluate_release",
    "risk_from_counts",
]

_NUMERIC = frozenset({"quantity_t", "price_usd_t"})
#: Default column halves for the linkability attack.
DEFAULT_LINK_COLUMNS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("period", "commodity", "flow", "quantity_t"),
    ("stage", "country", "partner_country", "contract_type", "price_usd_t"),
)


@dataclass(frozen=True)
class RiskEstimate:
    """An attack's risk with its confidence interval, and the success rates behind it."""

    risk: float
    ci_low: float
    ci_high: float
    attack_rate: float
    control_rate: float
    n_attacks: int


@dataclass(frozen=True)
class QualityScores:
    """SDMetrics quality: overall, per property, and per column (Column Shapes)."""

    overall: float
    column_shapes: float
    column_pair_trends: float
    columns: Mapping[str, float]


@dataclass(frozen=True)
class DcrScores:
    """Distance-to-closest-record summary (Gower distances)."""

    median_synthetic_to_real: float
    median_synthetic_to_holdout: float
    median_holdout_to_real: float
    share_closer_to_real: float


@dataclass(frozen=True, kw_only=True)
class EvaluationPolicy:
    """What of an evaluation may leave the node (the node owner's choice).

    ``quality``: the three SDMetrics scores; ``column_scores``: one score per column;
    ``risks``: the attack risks; ``intervals``: their confidence intervals and success
    rates; ``dcr``: the DCR summary; ``decimals``: rounding of every released number.
    """

    quality: bool = True
    column_scores: bool = False
    risks: bool = True
    intervals: bool = True
    dcr: bool = True
    decimals: int = 2


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of one synthetic release; never rows. See :meth:`released`."""

    quality: QualityScores
    singling_out: RiskEstimate
    linkability: RiskEstimate
    inference: Mapping[str, RiskEstimate]
    dcr: DcrScores
    confidence: float
    _extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def released(self, policy: EvaluationPolicy | None = None) -> dict[str, Any]:
        """The policy-filtered, rounded dict that may leave the node with the release."""
        policy = policy or EvaluationPolicy()
        places = policy.decimals
        if not (isinstance(places, int) and 0 <= places <= 6):
            raise EvaluationError("decimals must be an integer in [0, 6]")

        def r(x: float) -> float:
            return round(float(x), places)

        def risk(est: RiskEstimate) -> dict[str, Any]:
            out: dict[str, Any] = {"risk": r(est.risk)}
            if policy.intervals:
                out |= {"ci": [r(est.ci_low), r(est.ci_high)],
                        "attack_rate": r(est.attack_rate),
                        "control_rate": r(est.control_rate), "n_attacks": est.n_attacks}
            return out

        out: dict[str, Any] = {}
        if policy.quality:
            q = self.quality
            out["quality"] = {"overall": r(q.overall), "column_shapes": r(q.column_shapes),
                              "column_pair_trends": r(q.column_pair_trends)}
            if policy.column_scores:
                out["quality"]["columns"] = {k: r(v) for k, v in q.columns.items()}
        if policy.risks:
            out["privacy_risk"] = {
                "confidence": self.confidence,
                "singling_out": risk(self.singling_out),
                "linkability": risk(self.linkability),
                "inference": {k: risk(v) for k, v in self.inference.items()},
            }
        if policy.dcr:
            out["dcr"] = {k: r(v) for k, v in vars(self.dcr).items()}
        return out


# --- success rates and risk -----------------------------------------------------------------


def _wilson(successes: int, total: int, confidence: float) -> tuple[float, float]:
    """Wilson score estimate of a success rate and its half-width."""
    z = float(norm.ppf(0.5 + confidence / 2.0))
    denom = total + z * z
    rate = (successes + z * z / 2.0) / denom
    spread = successes * (total - successes) / total if total else 0.0
    return rate, z / denom * math.sqrt(spread + z * z / 4.0)


def risk_from_counts(attack_successes: int, control_successes: int, n_attacks: int, *,
                     confidence: float = 0.95) -> RiskEstimate:
    """Risk ``(r_a - r_c) / (1 - r_c)`` with its interval (Giomi et al. 2023, sec. 4)."""
    if n_attacks < 1:
        raise EvaluationError("an attack needs at least one target")
    ra, ea = _wilson(attack_successes, n_attacks, confidence)
    rc, ec = _wilson(control_successes, n_attacks, confidence)
    if rc >= 1.0:  # pragma: no cover - the Wilson rate never reaches 1
        return RiskEstimate(0.0, 0.0, 1.0, ra, rc, n_attacks)
    value = (ra - rc) / (1.0 - rc)
    d_attack = 1.0 / (1.0 - rc)
    d_control = (ra - 1.0) / (1.0 - rc) ** 2
    err = math.sqrt((ea * d_attack) ** 2 + (ec * d_control) ** 2)
    return RiskEstimate(value, max(value - err, -1.0), min(value + err, 1.0), ra, rc, n_attacks)


# --- encoding and distances -------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """The three frames as float arrays (categories as codes, numbers log-scaled, NaN)."""

    train: np.ndarray
    holdout: np.ndarray
    synthetic: np.ndarray
    columns: tuple[str, ...]
    numeric: np.ndarray  # bool per column


def _encode(train: pl.DataFrame, holdout: pl.DataFrame, synthetic: pl.DataFrame) -> _Encoded:
    frames = [train, holdout, synthetic]
    arrays: list[list[np.ndarray]] = [[], [], []]
    numeric = []
    for col in COLUMNS:
        if col in _NUMERIC:
            values = [f[col].cast(pl.Float64).to_numpy().astype(np.float64) for f in frames]
            top = max(float(np.nanmax(np.log1p(np.clip(v, 0, None)))) if np.isfinite(v).any()
                      else 0.0 for v in values)
            for i, v in enumerate(values):
                arrays[i].append(np.log1p(np.clip(v, 0, None)) / max(top, 1e-12))
            numeric.append(True)
        else:
            texts = [f[col].cast(pl.String).fill_null("\x00").to_numpy() for f in frames]
            _, inverse = np.unique(np.concatenate(texts), return_inverse=True)
            parts = np.split(inverse.astype(np.float64), np.cumsum([len(t) for t in texts])[:-1])
            for i, p in enumerate(parts):
                arrays[i].append(p)
            numeric.append(False)
    stacked = [np.column_stack(a) if a[0].size else np.empty((0, len(COLUMNS))) for a in arrays]
    return _Encoded(stacked[0], stacked[1], stacked[2], COLUMNS, np.asarray(numeric))


def _distances(queries: np.ndarray, pool: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """Gower distances, queries x pool (columns as given)."""
    total = np.zeros((queries.shape[0], pool.shape[0]))
    for c in range(queries.shape[1]):
        a, b = queries[:, c][:, None], pool[:, c][None, :]
        if numeric[c]:
            na, nb = np.isnan(a), np.isnan(b)
            diff = np.abs(np.nan_to_num(a) - np.nan_to_num(b))
            total += np.where(na & nb, 0.0, np.where(na | nb, 1.0, diff))
        else:
            total += a != b
    return np.asarray(total / max(queries.shape[1], 1), dtype=np.float64)


def _nearest(queries: np.ndarray, pool: np.ndarray, numeric: np.ndarray, *,
             k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices (queries x k) of the k nearest pool rows and the nearest distance."""
    chunk = max(1, 4_000_000 // max(pool.shape[0], 1))
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    best = np.empty(queries.shape[0])
    for start in range(0, queries.shape[0], chunk):
        dist = _distances(queries[start:start + chunk], pool, numeric)
        if k == 1:
            top = np.argmin(dist, axis=1)[:, None]
        else:
            top = np.argpartition(dist, k - 1, axis=1)[:, :k]
        idx[start:start + chunk] = top
        best[start:start + chunk] = dist.min(axis=1)
    return idx, best


# --- attacks ------------------------------------------------------------------------------------


def _matches(data: np.ndarray, predicate: Sequence[tuple[int, str, float]]) -> np.ndarray:
    mask = np.ones(data.shape[0], dtype=bool)
    for c, op, value in predicate:
        col = data[:, c]
        if op == "null":
            mask &= np.isnan(col)
        elif op == "==":
            mask &= col == value
        elif op == ">=":
            mask &= col >= value
        else:
            mask &= col <= value
    return mask


def _singling_out(enc: _Encoded, train: np.ndarray, rng: np.random.Generator, *,
                  n_attacks: int, n_columns: int, confidence: float) -> RiskEstimate:
    syn = enc.synthetic
    if syn.shape[0] > train.shape[0]:  # equal-size sets: predicates are as rare in all three
        syn = syn[rng.choice(syn.shape[0], size=train.shape[0], replace=False)]
    medians = np.array([np.nanmedian(syn[:, c]) if enc.numeric[c] and np.isfinite(syn[:, c]).any()
                        else 0.0 for c in range(syn.shape[1])])
    predicates: list[tuple[tuple[int, str, float], ...]] = []
    seen: set[tuple[tuple[int, str, float], ...]] = set()
    for _ in range(40 * n_attacks):
        if len(predicates) >= n_attacks:
            break
        row = syn[rng.integers(syn.shape[0])]
        cols = sorted(rng.choice(syn.shape[1], size=min(n_columns, syn.shape[1]),
                                 replace=False).tolist())
        pred = []
        for c in cols:
            v = float(row[c])
            if math.isnan(v):
                pred.append((c, "null", 0.0))
            elif enc.numeric[c]:
                pred.append((c, ">=" if v >= medians[c] else "<=", v))
            else:
                pred.append((c, "==", v))
        key = tuple(pred)
        if key in seen:
            continue
        seen.add(key)
        if int(_matches(syn, key).sum()) == 1:
            predicates.append(key)
    if not predicates:
        raise EvaluationError("no singling-out predicate isolates a synthetic row")
    hits_train = sum(int(_matches(train, p).sum()) == 1 for p in predicates)
    hits_control = sum(int(_matches(enc.holdout, p).sum()) == 1 for p in predicates)
    return risk_from_counts(hits_train, hits_control, len(predicates), confidence=confidence)


def _neighbour_sets(queries: np.ndarray, pool: np.ndarray, numeric: np.ndarray, *,
                    k: int) -> list[np.ndarray]:
    """Per query: the pool rows at its k-th smallest distance or closer (ties included)."""
    chunk = max(1, 4_000_000 // max(pool.shape[0], 1))
    out: list[np.ndarray] = []
    for start in range(0, queries.shape[0], chunk):
        dist = _distances(queries[start:start + chunk], pool, numeric)
        kth = np.partition(dist, min(k, dist.shape[1]) - 1, axis=1)[:, min(k, dist.shape[1]) - 1]
        out.extend(np.flatnonzero(row <= t + 1e-12) for row, t in zip(dist, kth, strict=True))
    return out


def _linkability(enc: _Encoded, targets: np.ndarray, controls: np.ndarray,
                 halves: tuple[Sequence[str], Sequence[str]], *, n_neighbors: int,
                 confidence: float) -> RiskEstimate:
    index = {c: i for i, c in enumerate(enc.columns)}
    a = [index[c] for c in halves[0]]
    b = [index[c] for c in halves[1]]

    def successes(rows: np.ndarray) -> int:
        sa = _neighbour_sets(rows[:, a], enc.synthetic[:, a], enc.numeric[a], k=n_neighbors)
        sb = _neighbour_sets(rows[:, b], enc.synthetic[:, b], enc.numeric[b], k=n_neighbors)
        return sum(np.intersect1d(x, y, assume_unique=True).size > 0
                   for x, y in zip(sa, sb, strict=True))

    return risk_from_counts(successes(targets), successes(controls), len(targets),
                            confidence=confidence)


def _inference(enc: _Encoded, targets: np.ndarray, controls: np.ndarray, secret: str, *,
               confidence: float) -> RiskEstimate:
    s = enc.columns.index(secret)
    aux = [i for i in range(len(enc.columns)) if i != s]

    def successes(rows: np.ndarray) -> int:
        nn, _ = _nearest(rows[:, aux], enc.synthetic[:, aux], enc.numeric[aux])
        guess, truth = enc.synthetic[nn[:, 0], s], rows[:, s]
        both_nan = np.isnan(guess) & np.isnan(truth)
        ok = np.abs(guess - truth) <= 0.05 * np.abs(truth) if enc.numeric[s] else guess == truth
        return int((both_nan | np.nan_to_num(ok, nan=0.0).astype(bool)).sum())

    return risk_from_counts(successes(targets), successes(controls), len(targets),
                            confidence=confidence)


def _dcr(enc: _Encoded, train: np.ndarray, rng: np.random.Generator, *,
         n_rows: int) -> DcrScores:
    pick = rng.choice(enc.synthetic.shape[0], size=min(n_rows, enc.synthetic.shape[0]),
                      replace=False)
    syn = enc.synthetic[pick]
    _, to_train = _nearest(syn, train, enc.numeric)
    _, to_hold = _nearest(syn, enc.holdout, enc.numeric)
    hold = enc.holdout[rng.choice(enc.holdout.shape[0],
                                  size=min(n_rows, enc.holdout.shape[0]), replace=False)]
    _, hold_to_train = _nearest(hold, train, enc.numeric)
    share = float(np.mean(to_train < to_hold) + 0.5 * np.mean(to_train == to_hold))
    return DcrScores(float(np.median(to_train)), float(np.median(to_hold)),
                     float(np.median(hold_to_train)), share)


# --- quality -------------------------------------------------------------------------------------


def _quality(real: pd.DataFrame, synthetic: pd.DataFrame) -> QualityScores:
    from sdmetrics.reports import QualityReport

    sdtypes = {c: {"sdtype": "numerical" if c in _NUMERIC else "categorical"} for c in COLUMNS}
    metadata = {"tables": {"records": {"columns": sdtypes}}}
    report = QualityReport()
    report.generate({"records": real}, {"records": synthetic}, metadata, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    shapes = report.get_details("Column Shapes")
    columns = {str(c): float(s) for c, s in zip(shapes["Column"], shapes["Score"], strict=True)}
    return QualityScores(float(report.get_score()), float(props["Column Shapes"]),
                         float(props["Column Pair Trends"]), columns)


def _to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    out = frame.select(COLUMNS).to_pandas()
    for col in COLUMNS:
        if col not in _NUMERIC:
            out[col] = out[col].astype(object)
    result: pd.DataFrame = out
    return result


def _frame(records: pl.DataFrame | pd.DataFrame, what: str) -> pl.DataFrame:
    frame = records if isinstance(records, pl.DataFrame) else pl.from_pandas(records)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{what} lacks the column(s) {', '.join(missing)}")
    return frame.select(COLUMNS)


def evaluate_release(
    real: pl.DataFrame | pd.DataFrame,
    synthetic: pl.DataFrame | pd.DataFrame,
    *,
    holdout: pl.DataFrame | pd.DataFrame,
    n_attacks: int = 500,
    secrets: Sequence[str] = ("country", "quantity_t"),
    link_columns: tuple[Sequence[str], Sequence[str]] = DEFAULT_LINK_COLUMNS,
    n_neighbors: int = 1,
    predicate_columns: int = 4,
    confidence: float = 0.95,
    max_quality_rows: int = 20_000,
    seed: int | None = None,
) -> EvaluationReport:
    """Evaluate ``synthetic`` against the training records ``real`` and a ``holdout``.

    ``real`` are the records the synthesizer was fitted on; ``holdout`` records of other
    units it never saw (:func:`synthetic.split_holdout`). The attacks use ``n_attacks``
    targets from each (at most the holdout's size); training sets are subsampled to the
    holdout's size where sizes matter (singling out, DCR). Quality uses at most
    ``max_quality_rows`` rows of each side. Returns scores only.
    """
    train_f, hold_f, syn_f = (_frame(real, "real"), _frame(holdout, "holdout"),
                              _frame(synthetic, "synthetic"))
    if min(train_f.height, hold_f.height, syn_f.height) < 10:
        raise EvaluationError("real, holdout and synthetic need at least 10 rows each")
    if not 0 < confidence < 1:
        raise EvaluationError("confidence must be in (0, 1)")
    for name in (*secrets, *link_columns[0], *link_columns[1]):
        if name not in COLUMNS:
            raise EvaluationError(f"unknown column {name!r}")
    rng = np.random.default_rng(seed)

    def sample(frame: pl.DataFrame, n: int) -> pl.DataFrame:
        if frame.height <= n:
            return frame
        picked: pl.DataFrame = frame[np.sort(rng.choice(frame.height, size=n, replace=False))]
        return picked

    quality = _quality(_to_pandas(sample(train_f, max_quality_rows)),
                       _to_pandas(sample(syn_f, max_quality_rows)))
    enc = _encode(train_f, hold_f, syn_f)
    n_control = enc.holdout.shape[0]
    train_eq = enc.train[rng.choice(enc.train.shape[0], size=min(n_control, enc.train.shape[0]),
                                    replace=False)]
    n = min(n_attacks, n_control, enc.train.shape[0])
    targets = enc.train[rng.choice(enc.train.shape[0], size=n, replace=False)]
    controls = enc.holdout[rng.choice(n_control, size=n, replace=False)]
    singling = _singling_out(enc, train_eq, rng, n_attacks=n, n_columns=predicate_columns,
                             confidence=confidence)
    linking = _linkability(enc, targets, controls, link_columns, n_neighbors=n_neighbors,
                           confidence=confidence)
    inference = {s: _inference(enc, targets, controls, s, confidence=confidence)
                 for s in secrets}
    dcr = _dcr(enc, train_eq, rng, n_rows=n)
    return EvaluationReport(quality, singling, linking, inference, dcr, confidence)
