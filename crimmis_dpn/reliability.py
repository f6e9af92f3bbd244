"""Reliability figures: an empirical DP audit and fuzzing of both services' HTTP APIs.

``python -m crimmis_dpn.reliability`` measures them and writes ``docs/reliability.md``::

    python -m crimmis_dpn.reliability --audit-draws 100000 --fuzz-examples 400

**Empirical DP audit.** A mechanism ``M`` is epsilon-DP when for neighbouring datasets
``D``, ``D'`` and every set of outputs ``S``: ``P[M(D) in S] <= e^epsilon P[M(D') in S]``.
:func:`audit` runs a mechanism many times on ``D`` and on ``D'``, and for a family of events
``S`` (thresholds ``output >= t`` and ``output <= t``, as DP-Sniper's and DP-Auditorium's
simplest tests; for floating-point samplers also Mironov's "this output cannot come from
that input" events) computes a lower bound on epsilon that holds with the stated confidence::

    eps_lb = ln( lower_CP(P[M(D) in S]) / upper_CP(P[M(D') in S]) )   (and D, D' swapped)

with Clopper-Pearson bounds, each at ``(1 - confidence) / 2``. The event is *chosen* on one
half of the draws and *measured* on the other half, so the bound is valid for the chosen
event (no multiple-testing bias): if the mechanism is epsilon-DP, ``eps_lb > epsilon`` happens
with probability at most ``1 - confidence``. A bound can only show a mechanism is *not*
private; ``eps_lb <= epsilon`` is evidence, not proof.

Negative controls show the audit has teeth: textbook floating-point Laplace noise
(``numpy``'s ``Generator.laplace``, Mironov's CCS 2012 attack: many outputs are reachable
from one input and not from its neighbour) and Laplace noise of half the claimed scale.

**Fuzzing.** :func:`fuzz_app` sends schemathesis-generated requests (valid and invalid, for
every operation of the OpenAPI schema, with the right credential) to an application in
process and counts 5xx answers and answers that leak a stack trace or a file path.

**Kill under load.** :func:`kill_under_load` (``--load-postgres URL``) runs a node process on
PostgreSQL under concurrent releases, SIGKILLs and restarts it mid-load, and reports
throughput, p50/p99 latency, and whether any release was lost or charged twice.
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import beta

__all__ = [
    "KNOWN_SERVER_ERRORS",
    "AuditResult",
    "Bound",
    "Event",
    "FuzzFailure",
    "FuzzReport",
    "KnownBug",
    "LoadOutcome",
    "LoadReport",
    "attainability_events",
    "audit",
    "clopper_pearson",
    "epsilon_lower_bound",
    "fuzz_app",
    "fuzz_services",
    "half_scale_laplace_draws",
    "kill_under_load",
    "leak_in",
    "load_postgres",
    "main",
    "naive_float_laplace_attainable",
    "naive_float_laplace_draws",
    "node_release_draws",
    "node_release_epsilon",
    "opendp_laplace_draws",
    "render",
    "standard_audits",
    "threshold_events",
]

# =========================================================================== the DP audit


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds ``(lower, upper)`` on a binomial proportion.

    ``P[p < lower] <= alpha`` and ``P[p > upper] <= alpha`` (each one-sided).
    """
    if trials <= 0:
        raise ValueError("trials must be positive")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside [0, {trials}]")
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha, successes, trials - successes + 1))
    upper = 1.0 if successes == trials else float(
        beta.ppf(1 - alpha, successes + 1, trials - successes))
    return lower, upper


@dataclass(frozen=True)
class Event:
    """A set of outputs ``S``, as a vectorised membership test."""

    name: str
    contains: Callable[[np.ndarray], np.ndarray]


def threshold_events(sample: np.ndarray, count: int = 200) -> list[Event]:
    """``output >= t`` and ``output <= t`` for ``count`` quantiles ``t`` of ``sample``."""
    grid = np.unique(np.quantile(sample, np.linspace(0.0005, 0.9995, count)))
    events = []
    for value in grid.tolist():
        events.append(Event(f"output >= {value:.6g}", _at_least(value)))
        events.append(Event(f"output <= {value:.6g}", _at_most(value)))
    return events


def _at_least(t: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda y: np.asarray(y >= t)


def _at_most(t: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda y: np.asarray(y <= t)


def _log_ratio(k_a: int, k_b: int, n_a: int, n_b: int, alpha: float) -> float:
    lower_a, _ = clopper_pearson(k_a, n_a, alpha / 2)
    _, upper_b = clopper_pearson(k_b, n_b, alpha / 2)
    if lower_a <= 0.0:
        return -math.inf
    return math.log(lower_a / upper_b)


@dataclass(frozen=True)
class Bound:
    """The chosen event and the lower bound measured on the held-out draws."""

    epsilon: float
    event: str
    numerator: str  # "D" or "D'": the dataset whose probability is on top
    p_numerator: float
    p_denominator: float


def epsilon_lower_bound(
    draws_d: np.ndarray,
    draws_d_prime: np.ndarray,
    events: Callable[[np.ndarray], Sequence[Event]],
    *,
    confidence: float = 0.99,
) -> Bound:
    """A lower bound on epsilon, valid with probability ``confidence`` (module docstring).

    The first half of each sample chooses the event (and which dataset goes on top), the
    second half measures it. ``events`` builds the candidate events from the selection half
    of both samples (pooled). Returns 0 when no event gives evidence.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    alpha = 1 - confidence
    half_d, half_p = len(draws_d) // 2, len(draws_d_prime) // 2
    if min(half_d, half_p) < 10:
        raise ValueError("need at least 20 draws from each dataset")
    select_d, measure_d = draws_d[:half_d], draws_d[half_d:]
    select_p, measure_p = draws_d_prime[:half_p], draws_d_prime[half_p:]
    candidates = events(np.concatenate([select_d, select_p]))
    best: tuple[float, Event, bool] | None = None
    for event in candidates:
        k_d = int(np.count_nonzero(event.contains(select_d)))
        k_p = int(np.count_nonzero(event.contains(select_p)))
        for d_on_top in (True, False):
            score = (_log_ratio(k_d, k_p, half_d, half_p, alpha) if d_on_top
                     else _log_ratio(k_p, k_d, half_p, half_d, alpha))
            if best is None or score > best[0]:
                best = (score, event, d_on_top)
    if best is None or best[0] == -math.inf:
        return Bound(0.0, "(no event had support in the selection half)", "D", 0.0, 0.0)
    _, event, d_on_top = best
    k_d = int(np.count_nonzero(event.contains(measure_d)))
    k_p = int(np.count_nonzero(event.contains(measure_p)))
    n_d, n_p = len(measure_d), len(measure_p)
    if d_on_top:
        value = _log_ratio(k_d, k_p, n_d, n_p, alpha)
        return Bound(max(0.0, value), event.name, "D", k_d / n_d, k_p / n_p)
    value = _log_ratio(k_p, k_d, n_p, n_d, alpha)
    return Bound(max(0.0, value), event.name, "D'", k_p / n_p, k_d / n_d)


@dataclass(frozen=True)
class AuditResult:
    """One mechanism's audit: the claimed epsilon against the measured lower bound."""

    mechanism: str
    neighbours: str
    events: str
    claimed_epsilon: float
    epsilon_lower_bound: float
    confidence: float
    draws: int  # per dataset
    event: str
    numerator: str
    p_numerator: float
    p_denominator: float
    seconds: float
    expected_to_hold: bool = True

    @property
    def holds(self) -> bool:
        """True when the audit found no evidence against the claimed epsilon."""
        return self.epsilon_lower_bound <= self.claimed_epsilon


def audit(
    mechanism: str,
    sample: Callable[[int], tuple[np.ndarray, np.ndarray]],
    *,
    claimed_epsilon: float,
    draws: int,
    events: Callable[[np.ndarray], Sequence[Event]] = threshold_events,
    confidence: float = 0.99,
    neighbours: str = "",
    events_name: str = "thresholds",
    expected_to_hold: bool = True,
) -> AuditResult:
    """Draw ``draws`` outputs on ``D`` and on ``D'`` (``sample(draws)``) and bound epsilon."""
    start = time.perf_counter()
    draws_d, draws_d_prime = sample(draws)
    bound = epsilon_lower_bound(draws_d, draws_d_prime, events, confidence=confidence)
    return AuditResult(
        mechanism=mechanism, neighbours=neighbours, events=events_name,
        claimed_epsilon=claimed_epsilon, epsilon_lower_bound=bound.epsilon,
        confidence=confidence, draws=draws, event=bound.event, numerator=bound.numerator,
        p_numerator=bound.p_numerator, p_denominator=bound.p_denominator,
        seconds=time.perf_counter() - start, expected_to_hold=expected_to_hold,
    )


# --------------------------------------------------------------------------- mechanisms


def opendp_laplace_draws(draws: int, *, epsilon: float, sensitivity: int,
                         scale_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``protocols.laplace_mechanism`` on one cell: value 0 (``D``) and ``sensitivity`` (``D'``).

    One call releases a vector of identical values; its coordinates are independent draws of
    the one-cell mechanism. ``scale_factor`` < 1 builds the *broken* negative control (noise
    of a fraction of the scale the claim needs); the production code never sets it.
    """
    from protocols import laplace_mechanism

    mechanism = laplace_mechanism(sensitivity=sensitivity, epsilon=epsilon)
    release = mechanism.release
    if scale_factor != 1.0:
        import opendp.prelude as dp

        broken = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)),
                                   dp.l1_distance(T=int), scale=mechanism.scale * scale_factor)

        def release(values: Sequence[int]) -> list[int]:
            return list(broken(list(values)))

    def run(value: int) -> np.ndarray:
        out: list[int] = []
        while len(out) < draws:
            out.extend(release([value] * min(20_000, draws - len(out))))
        return np.asarray(out, dtype=np.float64)

    return run(0), run(sensitivity)


def half_scale_laplace_draws(draws: int, *, epsilon: float,
                             sensitivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Negative control: OpenDP's sampler with half the scale ``epsilon`` needs (2x epsilon)."""
    return opendp_laplace_draws(draws, epsilon=epsilon, sensitivity=sensitivity,
                                scale_factor=0.5)


_TWO_53 = 9007199254740992.0  # numpy's doubles in [0, 1) are k / 2**53


def _numpy_laplace(k: int, loc: float, scale: float) -> float:
    """numpy's ``Generator.laplace(loc, scale)`` for the uniform draw ``k / 2**53``.

    The same operations in the same order as numpy's C code (``random_laplace``), with the
    same C library ``log``, so the result is bit for bit what numpy returns (a test checks).
    """
    u = k / _TWO_53
    if u >= 0.5:
        return loc - scale * math.log(2.0 - u - u)
    return loc + scale * math.log(u + u)


def naive_float_laplace_attainable(y: float, loc: float, scale: float) -> bool:
    """Whether numpy's textbook Laplace sampler can output ``y`` for the input ``loc``.

    The sampler's output increases with its uniform draw ``k``, so a binary search over the
    2**53 possible draws finds the only ones that could give ``y`` (Mironov 2012, section 4).
    """
    lo, hi = 1, (1 << 53) - 1
    if not (_numpy_laplace(lo, loc, scale) <= y <= _numpy_laplace(hi, loc, scale)):
        return False
    while lo < hi:
        mid = (lo + hi) // 2
        if _numpy_laplace(mid, loc, scale) >= y:
            hi = mid
        else:
            lo = mid + 1
    return _numpy_laplace(lo, loc, scale) == y


def naive_float_laplace_draws(draws: int, *, loc_d: float, loc_d_prime: float, scale: float,
                              seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Negative control: textbook floating-point Laplace, ``x + Laplace(scale)`` in doubles."""
    rng = np.random.default_rng(seed)
    return rng.laplace(loc_d, scale, draws), rng.laplace(loc_d_prime, scale, draws)


def attainability_events(loc_d: float, loc_d_prime: float,
                         scale: float) -> Callable[[np.ndarray], list[Event]]:
    """Mironov's events: "the output cannot come from ``D'``" (and from ``D``).

    They depend only on the public inputs, not on the sample; membership is computed with
    :func:`naive_float_laplace_attainable` (about 30 microseconds per output).
    """
    def build(_: np.ndarray) -> list[Event]:
        def unreachable_from(loc: float) -> Callable[[np.ndarray], np.ndarray]:
            cache: dict[float, bool] = {}

            def contains(y: np.ndarray) -> np.ndarray:
                out = np.empty(len(y), dtype=bool)
                for i, value in enumerate(y.tolist()):
                    hit = cache.get(value)
                    if hit is None:
                        hit = cache[value] = not naive_float_laplace_attainable(
                            value, loc, scale)
                    out[i] = hit
                return out
            return contains

        return [Event(f"output not attainable from x = {loc_d_prime:g}",
                      unreachable_from(loc_d_prime)),
                Event(f"output not attainable from x = {loc_d:g}", unreachable_from(loc_d))]
    return build


def _release_frames(cells: Sequence[tuple[str, str]], kind: str) -> tuple[pl.DataFrame,
                                                                           pl.DataFrame]:
    """Record frames ``D`` and ``D'`` for :func:`node_release_draws`.

    In every cell (country, month) ``D`` has one site with 50 t; ``D'`` has, in addition,
    one more site per cell: three records of 80 t (sums: 240 t, scaled to the unit bound of
    100 t) or five records (counts: capped at the unit record bound of 2).
    """
    from node._aggregate import RECORD_SCHEMA
    from protocols import parse_period

    def record(record_id: str, country: str, period: str, quantity: float,
               unit: str) -> dict[str, Any]:
        first, last = parse_period(period).month_index
        return {"record_id": record_id, "year": int(period[:4]), "first_month": first,
                "last_month": last, "commodity": "cobalt", "stage": "mining",
                "flow": "production", "country": country, "partner_country": None,
                "quantity_t": quantity, "price_usd_t": None, "contribution_unit": unit}

    base, extra = [], []
    for country, period in cells:
        base.append(record(f"bg-{country}-{period}", country, period, 50.0,
                           f"site:bg-{country}-{period}"))
        copies = 3 if kind == "sum" else 5
        for i in range(copies):
            extra.append(record(f"x-{country}-{period}-{i}", country, period, 80.0,
                                f"site:x-{country}-{period}"))
    d = pl.DataFrame(base, schema=RECORD_SCHEMA)
    return d, pl.concat([d, pl.DataFrame(extra, schema=RECORD_SCHEMA)])


def node_release_draws(draws: int, *, epsilon: float, kind: str = "sum",
                       countries: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Draws of one cell of ``node._aggregate.compute_release`` on neighbouring frames.

    A query grouped by country and month has ``countries x 12`` cells; in each cell, ``D'``
    has one contribution unit-year more than ``D`` (:func:`_release_frames`). Every unit lies
    in one cell and the noise of each cell is drawn independently, so each cell of a release
    is an independent draw of "the cell on ``D``" versus "the cell on ``D'`` = ``D`` plus
    one unit": one release gives ``countries x 12`` draws.
    """
    from node._aggregate import compute_release
    from protocols import AggregateQuery, CoverageEntry, all_country_codes

    codes = list(all_country_codes()[:countries])
    periods = [f"2024-{m:02d}" for m in range(1, 13)]
    query = AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": kind, "commodities": ["cobalt"],
        "flows": ["production"], "periods": periods, "countries": codes,
        "group_by": ["country", "period"], "epsilon": epsilon,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 100.0, "unit_record_bound": 2},
        "purpose": "empirical DP audit"})
    coverage = [CoverageEntry.model_validate({"commodity": "cobalt", "stages": ["mining"],
                                              "flows": ["production"], "countries": codes})]
    d, d_prime = _release_frames([(c, p) for c in codes for p in periods], kind)

    def run(frame: pl.DataFrame) -> np.ndarray:
        out: list[float] = []
        while len(out) < draws:
            release = compute_release(frame, query, coverage)
            values = release.sums if kind == "sum" else release.counts
            assert values is not None
            out.extend(values)
        return np.asarray(out[:draws], dtype=np.float64)

    return run(d), run(d_prime)


def node_release_epsilon(*, epsilon: float, kind: str) -> float:
    """The epsilon ``compute_release`` reports for the audited query (its claim)."""
    from node._aggregate import compute_release
    from protocols import AggregateQuery, CoverageEntry

    query = AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": kind, "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024-01"], "countries": ["COD"],
        "group_by": ["country", "period"], "epsilon": epsilon,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 100.0, "unit_record_bound": 2},
        "purpose": "empirical DP audit"})
    d, _ = _release_frames([("COD", "2024-01")], kind)
    coverage = [CoverageEntry.model_validate({"commodity": "cobalt", "stages": ["mining"],
                                              "flows": ["production"], "countries": ["COD"]})]
    return compute_release(d, query, coverage).epsilon


def standard_audits(draws: int, *, epsilon: float = 1.0,
                    confidence: float = 0.99) -> list[AuditResult]:
    """The audits docs/reliability.md reports: three real mechanisms, three controls."""
    sensitivity = 100_000  # 100 t in fixed point (thousandths)
    lsb_draws = min(draws, 40_000)  # the bit-level check costs ~30 us per output
    results = [
        audit("protocols.laplace_mechanism (OpenDP discrete Laplace)",
              lambda n: opendp_laplace_draws(n, epsilon=epsilon, sensitivity=sensitivity),
              claimed_epsilon=epsilon, draws=draws, confidence=confidence,
              neighbours=f"one cell: 0 vs {sensitivity} (the sensitivity)"),
        audit("node._aggregate.compute_release, sum",
              lambda n: node_release_draws(n, epsilon=epsilon, kind="sum"),
              claimed_epsilon=node_release_epsilon(epsilon=epsilon, kind="sum"), draws=draws,
              confidence=confidence,
              neighbours="record frames differing by one site-year (3 x 80 t, bound 100 t)"),
        audit("node._aggregate.compute_release, count",
              lambda n: node_release_draws(n, epsilon=epsilon, kind="count"),
              claimed_epsilon=node_release_epsilon(epsilon=epsilon, kind="count"), draws=draws,
              confidence=confidence,
              neighbours="record frames differing by one site-year (5 records, bound 2)"),
        audit("control: OpenDP Laplace at half the scale the claim needs",
              lambda n: half_scale_laplace_draws(n, epsilon=epsilon, sensitivity=sensitivity),
              claimed_epsilon=epsilon, draws=draws, confidence=confidence,
              neighbours=f"one cell: 0 vs {sensitivity}", expected_to_hold=False),
        audit("control: textbook float Laplace (numpy), threshold events only",
              lambda n: naive_float_laplace_draws(n, loc_d=0.0, loc_d_prime=100.0,
                                                  scale=100.0 / epsilon),
              claimed_epsilon=epsilon, draws=draws, confidence=confidence,
              neighbours="one cell: 0.0 vs 100.0 t, scale 100 / epsilon"),
        audit("control: textbook float Laplace (numpy), Mironov's attainability events",
              lambda n: naive_float_laplace_draws(n, loc_d=0.0, loc_d_prime=100.0,
                                                  scale=100.0 / epsilon),
              claimed_epsilon=epsilon, draws=lsb_draws, confidence=confidence,
              events=attainability_events(0.0, 100.0, 100.0 / epsilon),
              events_name="attainable from the neighbour? (Mironov 2012)",
              neighbours="one cell: 0.0 vs 100.0 t, scale 100 / epsilon",
              expected_to_hold=False),
    ]
    return results


# =========================================================================== API fuzzing

#: Text that must never appear in an answer: a Python stack trace or a source location.
_LEAK_PATTERNS = (
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r'File "[^"\n]+", line \d+'),
    re.compile(r"site-packages"),
)
_REPOSITORY = Path(__file__).resolve().parents[1]


def leak_in(text: str, paths: Sequence[str] = (), *, sent: str = "") -> str | None:
    """What in ``text`` is a stack trace or a server file path, else ``None``.

    Text that was in the request (``sent``) and is only echoed back (e.g. a node id in a
    finding) is not a leak: Hypothesis draws strings from the project's own source
    constants, ``"site-packages"`` among them.
    """
    for pattern in _LEAK_PATTERNS:
        for found in pattern.finditer(text):
            if found.group(0) not in sent:
                return f"stack trace or source location: {found.group(0)!r}"
    for path in (*paths, str(_REPOSITORY)):
        if path and path in text and path not in sent:
            return f"server file path {path!r}"
    return None


@dataclass(frozen=True)
class KnownBug:
    """A server error found by fuzzing and not fixed yet: it is reported, not hidden."""

    service: str
    operation: str
    raises: str  # the last line of the traceback starts with this
    summary: str
    repro: str  # a minimal request that triggers it


#: 5xx answers found by this fuzzing and reported to the developers; each still counts in the
#: figures of docs/reliability.md. Any other 5xx fails the default test run.
KNOWN_SERVER_ERRORS: tuple[KnownBug, ...] = ()  # the four found by fuzzing are fixed


@dataclass(frozen=True)
class FuzzFailure:
    """One answer that broke a rule: a 5xx (or an exception the server would turn into one),
    or a body with a stack trace or a file path."""

    service: str
    operation: str
    mode: str
    status: int | None
    problem: str
    request: str
    detail: str

    @property
    def known(self) -> KnownBug | None:
        """The entry of :data:`KNOWN_SERVER_ERRORS` this failure is, if any."""
        if self.status is not None:
            return None
        lines = [line for line in self.detail.splitlines() if line.strip()]
        raised = next((line for line in reversed(lines)
                       if re.match(r"^[\w.]+(Error|Exception)\b", line)), "")
        for bug in KNOWN_SERVER_ERRORS:
            if (bug.service, bug.operation) == (self.service, self.operation) \
                    and raised.startswith(bug.raises):
                return bug
        return None


@dataclass
class FuzzReport:
    """What :func:`fuzz_app` sent to one service and what came back."""

    service: str
    operations: int = 0
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    failures: list[FuzzFailure] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status, or requests the application raised on."""
        return sum(n for status, n in self.statuses.items()
                   if status.startswith("5") or status == "exception")

    @property
    def leaks(self) -> int:
        """Answers whose body held a stack trace or a file path."""
        return sum(1 for f in self.failures if f.problem.startswith("leak"))

    @property
    def unexpected(self) -> list[FuzzFailure]:
        """Failures that are not a :data:`KNOWN_SERVER_ERRORS` entry."""
        return [f for f in self.failures if f.known is None]


_PERIODS = [f"{y}" for y in range(2015, 2031)] + [f"2024-{m:02d}" for m in range(1, 13)]


def _periods() -> Any:
    from hypothesis import strategies as st

    years = st.lists(st.sampled_from([f"{y}" for y in range(2015, 2031)]), min_size=1,
                     max_size=4, unique=True)
    months = st.integers(2015, 2030).flatmap(lambda y: st.lists(
        st.sampled_from([f"{y}-{m:02d}" for m in range(1, 13)]), min_size=1, max_size=12,
        unique=True))
    quarters = st.integers(2015, 2030).flatmap(lambda y: st.lists(
        st.sampled_from([f"{y}-Q{q}" for q in range(1, 5)]), min_size=1, max_size=4,
        unique=True))
    return st.one_of(years, months, quarters)


def _repair(value: Any, data: Any) -> Any:
    """Give the fields whose format the OpenAPI schema cannot express a valid value.

    Query ids must be 32 hex digits, periods ``YYYY``/``YYYY-Qn``/``YYYY-MM`` without
    overlaps, countries ISO alpha-3 codes: with raw schema data almost every generated query
    stops at validation, and the code behind it is never reached.
    """
    from hypothesis import strategies as st

    from protocols import all_country_codes

    codes = st.sampled_from(all_country_codes()[:60])
    if isinstance(value, list):
        return [_repair(item, data) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: _repair(item, data) for key, item in value.items()}
    for key in out:
        if key == "query_id":
            out[key] = uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1))).hex
        elif key == "periods":
            out[key] = data.draw(_periods())
        elif key == "period" and isinstance(out[key], str):
            out[key] = data.draw(st.sampled_from(_PERIODS))
        elif key in ("countries", "partner_countries"):
            out[key] = data.draw(st.one_of(st.none(), st.lists(codes, min_size=1, max_size=6,
                                                               unique=True)))
        elif key in ("country", "partner_country") and isinstance(out[key], str):
            out[key] = data.draw(codes)
    return out


def _sent_text(case: Any) -> str:
    """Everything the request carried (path, query, body), as text, for echo checks."""
    import json

    body = getattr(case, "body", None)
    try:
        body_text = ("" if body is None or type(body).__name__.startswith("NotSet")
                     else json.dumps(body, default=str, ensure_ascii=False))
    except (TypeError, ValueError):
        body_text = repr(body)
    return f"{case.formatted_path} {case.query!r} {body_text}"


def _describe_request(case: Any) -> str:
    import json

    text = f"{case.method} {case.formatted_path}"
    if case.query:
        text += f" query={case.query!r}"
    body = getattr(case, "body", None)
    if body is not None and not type(body).__name__.startswith("NotSet"):
        try:
            text += f" body={json.dumps(body, default=str)[:2000]}"
        except (TypeError, ValueError):
            text += f" body={body!r:.2000}"
    return text


def _sender(report: FuzzReport, operation: Any, mode: str, *, headers: dict[str, str],
            repair: bool, private_paths: Sequence[str],
            timeout: float) -> Callable[[Any, Any], None]:
    """The body of one operation's fuzz test: send a case, check and count the answer."""
    import traceback

    from hypothesis import strategies as st

    label = operation.label

    def send(case: Any, data: Any) -> None:
        if repair and mode == "positive" and data.draw(st.booleans()):
            body = getattr(case, "body", None)
            if isinstance(body, dict | list):
                case.body = _repair(body, data)
        report.requests += 1
        report.per_operation[f"{label} ({mode})"] += 1
        try:
            response = case.call(headers=headers, timeout=timeout)
        except Exception as exc:
            report.statuses["exception"] += 1
            report.failures.append(FuzzFailure(
                report.service, label, mode, None,
                f"the application raised {type(exc).__name__} (HTTP 500)",
                _describe_request(case), traceback.format_exc()[-4000:]))
            return
        status = response.status_code
        report.statuses[str(status)] += 1
        text = response.content.decode("utf-8", "replace") if response.content else ""
        leak = leak_in(text, private_paths, sent=_sent_text(case))
        if status >= 500:
            report.failures.append(FuzzFailure(report.service, label, mode, status,
                                               f"HTTP {status}", _describe_request(case),
                                               text[:2000]))
        if leak is not None:
            report.failures.append(FuzzFailure(report.service, label, mode, status,
                                               f"leak: {leak}", _describe_request(case),
                                               text[:2000]))

    return send


def fuzz_app(app: Any, *, service: str, headers: dict[str, str], examples: int,
             modes: Sequence[str] = ("positive", "negative"), repair: bool = True,
             private_paths: Sequence[str] = (), timeout: float = 60.0,
             seed: int | None = None) -> FuzzReport:
    """Send schemathesis-generated requests for every operation of ``app``'s OpenAPI schema.

    Per operation and mode (``positive``: data the schema allows; ``negative``: data it
    forbids), up to ``examples`` requests, each with ``headers`` (the credential). With
    ``repair``, half of the positive cases get valid query ids, periods and countries
    (:func:`_repair`). Every answer is checked: no 5xx, no stack trace or file path.
    """
    import schemathesis
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.core.result import Err
    from schemathesis.python.asgi import shutdown_lifespans

    report = FuzzReport(service)
    start = time.perf_counter()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        for result in schema.get_all_operations():
            if isinstance(result, Err):  # the schema has an operation schemathesis cannot read
                raise RuntimeError(f"{service}: unusable OpenAPI operation: {result.err()}")
            operation = result.ok()
            report.operations += 1
            for mode in modes:
                send = _sender(report, operation, mode, headers=headers, repair=repair,
                               private_paths=private_paths, timeout=timeout)
                run = settings(max_examples=examples, deadline=None, database=None,
                               phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                               print_blob=False, verbosity=Verbosity.quiet)(given(
                    case=operation.as_strategy(generation_mode=GenerationMode(mode)),
                    data=st.data())(send))
                if seed is not None:
                    run = hypothesis_seed(seed)(run)
                try:
                    run()
                except Unsatisfiable:  # nothing to generate (e.g. negative data, no input)
                    continue
    finally:
        shutdown_lifespans()
    report.seconds = time.perf_counter() - start
    return report


_FUZZ_CSV = ("record_id,period,commodity,stage,flow,country,partner_country,quantity,unit,"
             "basis,site_id\n") + """\
r1,2024-01,cobalt,mining,production,COD,,1200,t,contained,KOL-01
r2,2024-02,cobalt,mining,production,COD,,900,t,contained,KOL-01
r3,2024-03,cobalt,mining,export,COD,CHN,700,t,contained,KOL-01
r4,2024-01,cobalt,mining,production,ZMB,,300,t,contained,ZMB-02
r5,2023-06,cobalt,mining,stock_level,COD,,150,t,contained,KOL-01
r6,2024-Q2,lithium,mining,production,AUS,,5000,t,contained,AUS-07
"""


def _fuzz_node(home: Path) -> Any:
    """A node with a wide policy (so valid queries reach the release) and a few records."""
    import node
    from protocols import CoverageEntry

    policy = node.Policy(
        budget=node.BudgetPolicy(epsilon_per_year=100.0, max_epsilon_per_release=10.0),
        coverage=[CoverageEntry.model_validate({
            "commodity": c, "stages": ["mining", "refining"],
            "flows": ["production", "export", "import", "stock_level"],
            "countries": ["COD", "ZMB", "AUS", "CHN"]}) for c in ("cobalt", "lithium")])
    context = node.init_node(home=home, node_id="fuzz-node", display_name="Fuzz node",
                             policy=policy)
    data = home / "records.csv"
    data.write_text(_FUZZ_CSV, encoding="utf-8")
    fields = _FUZZ_CSV.splitlines()[0].split(",")
    mapping = node.Mapping.model_validate({"columns": {name: name for name in fields}})
    node.ingest_file(engine=context.engine, path=data, mapping=mapping)
    return context


def fuzz_services(examples: int, *, home: Path | None = None,
                  seed: int | None = None) -> list[FuzzReport]:
    """Fuzz the coordinator (operator token) and a node (its access token), in process."""
    import coordinator
    import node

    with tempfile.TemporaryDirectory(prefix="dpn-fuzz-") as scratch:
        base = home or Path(scratch)
        hub = coordinator.init_coordinator(home=base / "coordinator")
        company = _fuzz_node(base / "node")
        try:
            operator = hub.settings.operator_token.get_secret_value()
            access = company.settings.access_token.get_secret_value()
            private = [str(base.resolve()), sys.prefix]
            return [
                fuzz_app(coordinator.create_app(hub), service="coordinator",
                         headers={"Authorization": f"Bearer {operator}"}, examples=examples,
                         private_paths=private, seed=seed),
                fuzz_app(node.create_app(company, run_agent=False), service="node",
                         headers={"Authorization": f"Bearer {access}"}, examples=examples,
                         private_paths=private, seed=seed),
            ]
        finally:
            hub.engine.dispose()
            company.engine.dispose()


# =========================================================================== kill under load

_LOAD_CSV = ("record_id,period,commodity,stage,flow,country,quantity,unit,basis,site_id\n"
             + "".join(f"L-{i},2024-{i % 12 + 1:02d},cobalt,mining,production,"
                       f"{'COD' if i % 3 else 'ZMB'},{100 + i},t,contained,site-{i % 9}\n"
                       for i in range(60)))


@dataclass
class LoadOutcome:
    """What one client saw for one query id (retried with the same id after a failure)."""

    query_id: str
    body: dict[str, Any]
    status: int | None = None  # the final HTTP status (None: never answered)
    answer: dict[str, Any] | None = None  # the signed answer, when released
    error: str | None = None  # the error code, when refused
    attempts: int = 0
    failed_attempts: int = 0  # connection refused or reset (the node was down)


@dataclass
class LoadReport:
    """A node on PostgreSQL under concurrent releases, SIGKILLed and restarted mid-load."""

    threads: int
    queries_per_thread: int
    epsilon: float
    admitted: int  # releases the budget admits
    kill_after: int  # the kill came once this many answers had been received
    outcomes: list[LoadOutcome]
    latencies: list[float]  # seconds, of every attempt that got an HTTP answer
    seconds: float  # the load phase, wall clock (the downtime included)
    downtime: float  # from the kill to the restarted node answering /v1/health
    answered_before_kill: int
    spent: float  # epsilon spent on the year, from GET /v1/budget
    total: float
    node_releases: int  # dpn_node_releases from GET /metrics
    recheck_mismatches: list[str]  # received answers the node did not return again as is
    refused_rechecked: int  # refused query ids sent again: still refused, not released
    spent_after_recheck: float

    @property
    def released(self) -> list[LoadOutcome]:
        return [o for o in self.outcomes if o.status == 200]

    def latency(self, quantile: float) -> float:
        return float(np.quantile(np.asarray(self.latencies), quantile))

    @property
    def throughput(self) -> float:
        """Answered requests per second over the load phase (downtime included)."""
        return len(self.latencies) / self.seconds


def _load_query(query_id: str, epsilon: float) -> dict[str, Any]:
    return {"query_id": query_id, "kind": "sum", "commodities": ["cobalt"],
            "flows": ["production"], "periods": ["2024"], "countries": ["COD", "ZMB"],
            "group_by": ["country"], "epsilon": epsilon,
            "bounds": {"record_clip": 1000.0, "unit_sum_bound": 2000.0},
            "purpose": "kill under load"}


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if found is None:
        raise ValueError(f"metric {name} not found")
    return float(found.group(1))


def admitting(releases: int, epsilon: float, delta: float = 1e-6) -> float:
    """The yearly budget (at ``delta``) that admits exactly ``releases`` releases of
    ``epsilon``: the proven epsilon of that many (zCDP composition may prove less than their
    sum, see ``protocols._accounting``)."""
    from protocols import PrivacyCost, Spend, guarantee

    return guarantee(Spend.total([PrivacyCost(epsilon=epsilon)] * releases), delta=delta)


def spent_for(releases: int, epsilon: float, delta: float = 1e-6) -> float:
    """What ``releases`` releases of ``epsilon`` spend, as the node's budget shows it."""
    return round(admitting(releases, epsilon, delta), 9)


def kill_under_load(*, home: Path, database_url: str, threads: int = 8,
                    queries_per_thread: int = 30, epsilon: float = 0.05, admitted: int = 120,
                    kill_after: int = 60, timeout: float = 120.0) -> LoadReport:
    """Run a node process on ``database_url``, load it with concurrent releases from
    ``threads`` clients (each query a fresh id; a failed attempt is retried with the same id),
    SIGKILL it once ``kill_after`` answers have arrived, restart it, finish the load, then
    read its budget and metrics and send every query again. The budget admits ``admitted``
    releases of ``epsilon``."""
    import os
    import signal
    import threading

    import httpx

    import node
    from crimmis_dpn._processes import free_port, start_service, stop_services, wait_healthy

    policy = node.Policy(
        budget=node.BudgetPolicy(epsilon_per_year=admitting(admitted, epsilon),
                                 max_epsilon_per_release=epsilon),
        coverage=[_coverage()])
    context = node.init_node(home=home / "node", node_id="load-node", display_name="Load",
                             database_url=database_url, port=free_port(), policy=policy)
    data = home / "records.csv"
    data.write_text(_LOAD_CSV, encoding="utf-8")
    columns = _LOAD_CSV.splitlines()[0].split(",")
    node.ingest_file(engine=context.engine, path=data, mapping=node.Mapping.model_validate(
        {"columns": {name: name for name in columns}}))
    context.engine.dispose()
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    port = context.settings.port
    args = ["node", "serve", "--home", str(context.home)]
    headers = {"Authorization": f"Bearer {context.settings.access_token.get_secret_value()}"}
    services = [start_service("load-node", args, port=port, log_dir=logs)]
    url = services[0].url
    outcomes = [[LoadOutcome(query_id=uuid.uuid4().hex, body={}) for _ in
                 range(queries_per_thread)] for _ in range(threads)]
    for row in outcomes:
        for outcome in row:
            outcome.body = _load_query(outcome.query_id, epsilon)
    latencies: list[float] = []
    lock = threading.Lock()
    answered = threading.Event()  # set once kill_after answers arrived
    count = [0]
    deadline = time.monotonic() + timeout

    def client(mine: list[LoadOutcome]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=10.0) as http:
            for outcome in mine:
                while outcome.status is None and time.monotonic() < deadline:
                    outcome.attempts += 1
                    start = time.perf_counter()
                    try:
                        response = http.post("/v1/queries", json=outcome.body)
                    except httpx.TransportError:
                        outcome.failed_attempts += 1
                        time.sleep(0.05)
                        continue
                    took = time.perf_counter() - start
                    payload = response.json()
                    outcome.status = response.status_code
                    if response.status_code == 200:
                        outcome.answer = payload
                    else:
                        outcome.error = payload.get("error")
                    with lock:
                        latencies.append(took)
                        count[0] += 1
                        if count[0] >= kill_after:
                            answered.set()

    try:
        wait_healthy(services)
        workers = [threading.Thread(target=client, args=(row,), daemon=True)
                   for row in outcomes]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        if not answered.wait(timeout):
            raise RuntimeError(f"fewer than {kill_after} answers before the timeout")
        before_kill = count[0]
        killed_at = time.perf_counter()
        os.kill(services[0].process.pid, signal.SIGKILL)
        services[0].process.wait(timeout=10)
        services[0].log.close()
        services.append(start_service("load-node", args, port=port, log_dir=logs))
        wait_healthy(services[-1:])
        downtime = time.perf_counter() - killed_at
        for worker in workers:
            worker.join(max(1.0, deadline - time.monotonic()))
        seconds = time.perf_counter() - started
        flat = [o for row in outcomes for o in row]
        with httpx.Client(base_url=url, headers=headers, timeout=5.0) as http:
            budget = {row["year"]: row for row in http.get("/v1/budget").json()}
            metrics = http.get("/metrics").text
            mismatches, refused = [], 0
            for outcome in flat:
                try:
                    again = http.post("/v1/queries", json=outcome.body)
                except httpx.TransportError as exc:
                    mismatches.append(f"{outcome.query_id}: no answer ({exc!r})")
                    continue
                if outcome.status == 200:
                    if again.status_code != 200 or again.json() != outcome.answer:
                        mismatches.append(f"{outcome.query_id}: {again.status_code} "
                                          f"{again.text[:200]}")
                elif outcome.status is not None:
                    if again.status_code == 200:
                        mismatches.append(f"{outcome.query_id}: refused, now released")
                    refused += 1
            after = {row["year"]: row for row in http.get("/v1/budget").json()}
    finally:
        stop_services([s for s in services if s.process.poll() is None])
        for service in services:
            service.log.close()
    year = budget.get(2024, {"spent": 0.0, "total": admitting(admitted, epsilon)})
    return LoadReport(
        threads=threads, queries_per_thread=queries_per_thread, epsilon=epsilon,
        admitted=admitted, kill_after=kill_after, outcomes=flat, latencies=latencies,
        seconds=seconds, downtime=downtime, answered_before_kill=before_kill,
        spent=float(year["spent"]), total=float(year["total"]),
        node_releases=int(_metric(metrics, "dpn_node_releases")),
        recheck_mismatches=mismatches, refused_rechecked=refused,
        spent_after_recheck=float(after.get(2024, year)["spent"]))


def _coverage() -> Any:
    from protocols import CoverageEntry

    return CoverageEntry.model_validate({"commodity": "cobalt", "stages": ["mining"],
                                         "flows": ["production"],
                                         "countries": ["COD", "ZMB"]})


def load_postgres(admin_url: str, **options: Any) -> LoadReport:
    """:func:`kill_under_load` on a fresh PostgreSQL database created on ``admin_url``'s
    server (and dropped afterwards)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"dpn_load_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory(prefix="dpn-load-") as scratch:
            return kill_under_load(home=Path(scratch), database_url=url, **options)
    finally:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name AND pid <> pg_backend_pid()"),
                         {"name": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


# =========================================================================== the report


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for package in ("opendp", "numpy", "scipy", "schemathesis", "hypothesis", "fastapi"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            parts.append(f"{package} (not installed)")
    return ", ".join(parts)


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3f}"


def _audit_section(results: Sequence[AuditResult]) -> list[str]:
    lines = [
        "## Empirical DP audit",
        "",
        "Each mechanism runs many times on two neighbouring inputs `D` and `D'`; for events",
        "`S` it estimates `P[M(D) in S]` and `P[M(D') in S]` and reports the lower bound",
        "`eps_lb = ln(lower(P_num) / upper(P_den))` from Clopper-Pearson bounds (each at half",
        "the error level, so the pair holds jointly at the stated confidence). The event is",
        "chosen on the first half of the draws and measured on the second half. An",
        "epsilon-DP mechanism gives `eps_lb > epsilon` with probability at most 1 - confidence;",
        "`eps_lb` is a *lower* bound: a value at or below the claim is evidence, not proof.",
        "",
        "Events: *thresholds* are `output >= t` and `output <= t` for 200 quantiles `t` of the",
        "draws (the simplest family of DP-Sniper and DP-Auditorium). *Attainability* is",
        "Mironov's attack (CCS 2012): the set of outputs that numpy's sampler cannot produce",
        "from `D'` (decided bit for bit by replaying its arithmetic for every possible uniform",
        "draw); the bound is then limited only by the number of draws.",
        "",
        "| mechanism | neighbouring inputs | events | claimed epsilon | epsilon lower bound "
        "| draws per input | chosen event | P(num) / P(den) | verdict | time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if r.expected_to_hold:
            verdict = "holds" if r.holds else "**VIOLATED**"
        else:
            verdict = ("caught (control)" if not r.holds
                       else "**not caught** (control, as expected for this event family)")
        ratio = f"{r.p_numerator:.4f} / {r.p_denominator:.4f} (num: {r.numerator})"
        lines.append(
            f"| {r.mechanism} | {r.neighbours} | {r.events} | {r.claimed_epsilon:.4f} | "
            f"{_fmt(r.epsilon_lower_bound)} | {r.draws:,} | `{r.event}` | {ratio} | "
            f"{verdict} | {r.seconds:.1f} s |")
    lines += [
        "",
        f"Confidence: {results[0].confidence:.0%}." if results else "",
        "",
        "Notes:",
        "",
        "* The node's release is audited through `node._aggregate.compute_release` itself: a",
        "  query grouped by country and month over 40 countries (480 cells); in every cell `D'`",
        "  has one site-year more than `D` (three records of 80 t, scaled to the unit bound",
        "  of 100 t; for counts five records, capped at the bound of 2). Each unit lies in one",
        "  cell and each cell gets its own noise, so every cell of a release is one draw of",
        "  \"the cell on `D`\" against \"the cell on `D` plus one unit\".",
        "* `protocols.laplace_mechanism` is audited on one value (0 against the sensitivity,",
        "  100,000 thousandths = 100 t); one call releases a vector of copies, i.e. independent",
        "  draws.",
        "* Negative controls: (1) the **real floating-point attack**: textbook Laplace noise",
        "  from numpy (`Generator.laplace`, `x + b log(2U)` in doubles) on 0.0 t against",
        "  100.0 t. The threshold events do not see its flaw (row 5: its distribution *looks*",
        "  right), Mironov's attainability events do (row 6): most of its outputs on `D`",
        "  can never come from `D'`. (2) OpenDP's own sampler at half the scale the claim",
        "  needs (true epsilon 2): the threshold audit flags it.",
        "",
    ]
    return lines


def _fuzz_section(reports: Sequence[FuzzReport], examples: int, seed: int | None) -> list[str]:
    total = sum(r.requests for r in reports)
    lines = [
        "## API fuzzing",
        "",
        "schemathesis generates requests from each service's OpenAPI schema (`/openapi.json`)",
        f"for every operation: up to {examples} with data the schema allows (*positive*; half of",
        "them with valid query ids, periods and countries, which the schema cannot express) and",
        f"up to {examples} with data it forbids (*negative*), each with the service's credential",
        "(the operator token for the coordinator, the access token for the node). Both",
        "applications run in process on temporary homes (SQLite); the node holds a few records",
        "and a budget of 100 per year so valid queries reach the release. Every answer is",
        "checked: no 5xx (an exception escaping the application counts as its 500), no stack",
        "trace, no server file path.",
        "",
        f"Requests sent: **{total:,}**" + (f" (hypothesis seed {seed})." if seed is not None
                                            else "."),
        "",
        "| service | operations | requests | 5xx | of which known (below) | stack traces or "
        "paths in answers | time | statuses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        known = sum(1 for f in r.failures if f.known is not None)
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(r.statuses.items()))
        lines.append(f"| {r.service} | {r.operations} | {r.requests:,} | {r.server_errors} | "
                     f"{known} | {r.leaks} | {r.seconds:.0f} s | {statuses} |")
    lines += ["", "### Known server errors (found by this fuzzing, not fixed yet)", ""]
    counts: Counter[KnownBug] = Counter()
    for r in reports:
        for f in r.failures:
            if f.known is not None:
                counts[f.known] += 1
    for bug in KNOWN_SERVER_ERRORS:
        lines.append(f"* **{bug.service} `{bug.operation}`**: {bug.summary} "
                     f"(`{bug.raises}`); hit {counts[bug]} time(s) in this run. "
                     f"Minimal request: `{bug.repro}`.")
    unexpected = [f for r in reports for f in r.unexpected]
    lines += ["", "### Other failures", ""]
    if not unexpected:
        lines.append("None.")
    for f in unexpected[:20]:
        lines += [f"* {f.service} `{f.operation}` ({f.mode}): {f.problem}",
                  f"  request: `{f.request[:600]}`", ""]
    lines.append("")
    return lines


def _load_section(report: LoadReport) -> list[str]:
    released = report.released
    unanswered = sum(1 for o in report.outcomes if o.status is None)
    retried = sum(o.failed_attempts for o in report.outcomes)
    return [
        "## Kill under load (PostgreSQL)",
        "",
        f"A node process on a fresh PostgreSQL database, {report.threads} concurrent clients "
        f"sending {report.threads * report.queries_per_thread} releases over HTTP (each a",
        f"fresh query id, epsilon {report.epsilon:g}; a failed attempt is retried with the "
        f"same id), a budget that admits {report.admitted} of them. The node is killed with",
        f"SIGKILL once {report.kill_after} answers have arrived, restarted, and the load goes "
        "on; then every query is sent again (`tests/integration/test_load_postgres.py` runs",
        "the same code).",
        "",
        "| answers | wall time (downtime included) | throughput | latency p50 | latency p99 "
        "| restart downtime | released | budget admits | spent | node's release count "
        "| answers not returned again as is | never answered | attempts retried |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {len(report.latencies):,} | {report.seconds:.1f} s | {report.throughput:.1f}/s | "
        f"{report.latency(0.5) * 1000:.0f} ms | {report.latency(0.99) * 1000:.0f} ms | "
        f"{report.downtime:.1f} s | {len(released)} | {report.admitted} | "
        f"{report.spent:.4f} of {report.total:g} | {report.node_releases} | "
        f"{len(report.recheck_mismatches)} | {unanswered} | {retried} |",
        "",
        "Latency is per HTTP answer (the attempts cut by the kill are not in it); throughput "
        "is answers per second of the load phase, the restart included.",
        "",
    ]


def render(*, audits: Sequence[AuditResult], fuzz: Sequence[FuzzReport], examples: int,
           seed: int | None, command: str, seconds: float,
           load: LoadReport | None = None) -> str:
    """The text of docs/reliability.md."""
    lines = [
        "# Reliability figures",
        "",
        "Generated by `python -m crimmis_dpn.reliability`; do not edit by hand, rerun it.",
        "The default test run (`tests/adversarial/`) runs the same code with fewer draws and",
        "requests; this page is the large run.",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; total time {seconds:.0f} s",
        f"- Machine: {platform.machine()}, {platform.system()} {platform.release()}",
        f"- {_versions()}",
        "",
    ]
    if audits:
        lines += _audit_section(audits)
    if fuzz:
        lines += _fuzz_section(fuzz, examples, seed)
    if load is not None:
        lines += _load_section(load)
    lines += [
        "## Measured by the test run, not by this command",
        "",
        "* `tests/adversarial/test_attacks.py`: every route of both applications (API, dashboard,",
        "  node admin pages), called with the operator, auditor and no credential after a pooled",
        "  query and a balance answered by three nodes, returns no record id, site, raw",
        "  quantity, nor any node's own figure for a cell where it has data (the suppressed",
        "  one-company cell included); a query repeated past a node's budget is refused with",
        "  the epsilon requested and remaining, and nothing more is charged; job envelopes",
        "  replayed (also to a restarted agent), misaddressed, expired or of the wrong kind",
        "  are refused by the node.",
        "* `tests/adversarial/test_bad_files.py`: UTF-16, binary and half-UTF-8 files, NUL bytes,",
        "  mixed and unknown units, NaN and non-numbers, XLSX formula text and uncalculated",
        "  formulas, damaged Parquet, nested Parquet columns: precise errors, nothing stored;",
        "  a 300,000-row CSV (and the same file with one bad row) imports in a subprocess",
        "  whose peak RSS must grow by less than 1.5 GiB; an XLSX zip bomb (300 MiB of sheet",
        "  XML in under 1 MiB) is refused from the zip directory before anything is inflated",
        "  (Python allocations below 16 MiB, in well under a second).",
        "* `tests/adversarial/test_stateful.py`: a Hypothesis state machine drives a node",
        "  in process (imports of good and bad files, push releases with random epsilon,",
        "  repeated and reused query ids, malformed and unauthenticated requests, jobs held for",
        "  approval, approved and denied on the admin page); after every step: no 5xx, no",
        "  stack trace, spent never above the total and equal to the epsilons of the distinct",
        "  released query ids (read from `GET /v1/budget`), one release per query id",
        "  (`GET /metrics`), a repeated query id answered identically without a charge.",
        "* `tests/integration/test_partition.py`: a pull-mode node process in its own network",
        "  namespace, joined to the coordinator's by a veth pair; the link is cut while a pooled",
        "  query waits for the node and restored after 4 s: the query completes (time after the",
        "  restore printed), the node charged once, one ledger entry; with 300 ms of delay each",
        "  way (a relay: the kernel lacks `sch_netem`) a query still completes.",
        "* `tests/integration/test_full_disk.py`: the node's home on a 16 MiB tmpfs, filled",
        "  with 4 KiB to 160 KiB left: `dpn node ingest` exits 1 with a disk-full message, no",
        "  traceback, nothing imported; a release fails with nothing charged, no ledger entry,",
        "  no release (the reservation-committed-then-full window included); with room again",
        "  the same import and release succeed, each charged once; a push release through",
        "  the node's API answers `507 insufficient_storage` naming the cause, nothing",
        "  charged. `tests/integration/test_pull_agent.py`: a pull agent whose release hits a",
        "  full disk stays alive, keeps the job pending and answers it, charged once, when",
        "  there is room.",
        "",
        "## Not measured here yet",
        "",
        "Stateful fuzzing through enrolment and jobs with signed envelopes, fuzzing with",
        "enrolled nodes answering, and audits of the synthetic-data release and of composed",
        "(repeated) releases.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crimmis_dpn.reliability``: measure, print a summary, write the report."""
    import logging

    parser = argparse.ArgumentParser(
        prog="python -m crimmis_dpn.reliability",
        description="Measure the empirical DP audit and the API fuzzing figures and write "
                    "docs/reliability.md. Example: python -m crimmis_dpn.reliability "
                    "--audit-draws 100000 --fuzz-examples 400",
    )
    parser.add_argument("--audit-draws", type=int, default=100_000,
                        help="draws per input of each audited mechanism (0: no audit)")
    parser.add_argument("--fuzz-examples", type=int, default=400,
                        help="requests per operation and mode (0: no fuzzing)")
    parser.add_argument("--confidence", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed for fuzzing")
    parser.add_argument("--load-postgres", metavar="URL", default=None,
                        help="also run the kill-under-load scenario on a fresh database "
                             "created on this PostgreSQL server, e.g. "
                             "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--output", type=Path, default=Path("docs/reliability.md"))
    args = parser.parse_args(argv)
    if args.audit_draws < 0 or args.fuzz_examples < 0:
        parser.error("counts must not be negative")
    if args.audit_draws and args.audit_draws < 1000:
        parser.error("--audit-draws: use at least 1000 (or 0 to skip the audit)")
    start = time.perf_counter()
    audits = standard_audits(args.audit_draws, confidence=args.confidence) \
        if args.audit_draws else []
    for r in audits:
        print(f"audit  {r.mechanism}: claimed {r.claimed_epsilon:.4f}, "
              f"lower bound {_fmt(r.epsilon_lower_bound)} ({r.seconds:.1f} s)")
    reports: list[FuzzReport] = []
    if args.fuzz_examples:
        logging.disable(logging.WARNING)  # refused envelopes are logged by the thousand
        try:
            reports = fuzz_services(args.fuzz_examples, seed=args.seed)
        finally:
            logging.disable(logging.NOTSET)
        for report in reports:
            print(f"fuzz   {report.service}: {report.requests} requests, "
                  f"{report.server_errors} 5xx ({len(report.unexpected)} unexpected "
                  f"failures), {report.leaks} leaks ({report.seconds:.0f} s)")
    load = load_postgres(args.load_postgres) if args.load_postgres else None
    if load is not None:
        print(f"load   {len(load.latencies)} answers, {load.throughput:.1f}/s, p50 "
              f"{load.latency(0.5) * 1000:.0f} ms, p99 {load.latency(0.99) * 1000:.0f} ms, "
              f"{len(load.released)} released, spent {load.spent:.4f}, "
              f"{len(load.recheck_mismatches)} answers not returned again")
    command = "python -m crimmis_dpn.reliability " + " ".join(
        sys.argv[1:] if argv is None else argv)
    text = render(audits=audits, fuzz=reports, examples=args.fuzz_examples, seed=args.seed,
                  command=command.strip(), seconds=time.perf_counter() - start, load=load)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    broken = [r for r in audits if r.holds != r.expected_to_hold and r.expected_to_hold]
    uncaught = [r for r in audits if not r.expected_to_hold and r.holds
                and "Mironov" in r.events]
    unexpected = [f for report in reports for f in report.unexpected]
    load_broken = load is not None and (
        bool(load.recheck_mismatches) or len(load.released) > load.admitted
        or any(o.status is None for o in load.outcomes)
        or not math.isclose(load.spent, spent_for(load.node_releases, load.epsilon),
                            abs_tol=1e-9))
    return 1 if broken or uncaught or unexpected or load_broken else 0


if __name__ == "__main__":
    sys.exit(main())
