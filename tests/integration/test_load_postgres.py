"""A node on PostgreSQL under concurrent releases, SIGKILLed mid-load and restarted.

Eight clients send releases over HTTP (each a fresh query id, a failed attempt retried with
the same id, as a client does); the budget admits fewer releases than are asked for. The
node process is killed with SIGKILL while answers are flowing and started again. Then:
no more releases than the budget admits, the budget spent is exactly what the distinct
releases cost under the node's accountant (each counted once), every answer a client
received is recorded at the node (asked again, the node returns it as is, without a
charge), no refused query was released, and the node counts each release once. The
figures printed are the ones `python -m crimmis_dpn.reliability --load-postgres URL` writes
to docs/reliability.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from crimmis_dpn.reliability import admitting, kill_under_load, spent_for

pytestmark = [pytest.mark.processes, pytest.mark.postgres]

THREADS, PER_THREAD, EPSILON, ADMITTED, KILL_AFTER = 8, 25, 0.05, 100, 50


def test_a_node_killed_under_load_neither_loses_nor_double_charges_a_release(
    tmp_path: Path, postgres_url: str,
) -> None:
    report = kill_under_load(home=tmp_path, database_url=postgres_url, threads=THREADS,
                             queries_per_thread=PER_THREAD, epsilon=EPSILON,
                             admitted=ADMITTED, kill_after=KILL_AFTER, timeout=60.0)
    released = report.released
    print(f"\nkill under load: {len(report.latencies)} answers in {report.seconds:.1f} s "
          f"({report.throughput:.1f}/s, downtime {report.downtime:.1f} s included); "
          f"latency p50 {report.latency(0.5) * 1000:.0f} ms, p99 "
          f"{report.latency(0.99) * 1000:.0f} ms; {len(released)} released, "
          f"{report.answered_before_kill} answered before the kill, "
          f"{sum(o.failed_attempts for o in report.outcomes)} failed attempts retried")
    # Every query got a definitive answer: released, or refused for lack of budget. (A query
    # id whose release was cut by the kill must not hang its retries, nor stay charged.)
    unanswered = [o for o in report.outcomes if o.status is None]
    assert not unanswered, (
        f"{len(unanswered)} query id(s) never answered after the restart (retried "
        f"{[o.attempts for o in unanswered]} times); budget spent {report.spent:.4f} for "
        f"{report.node_releases} releases of {EPSILON}; rechecks: "
        f"{report.recheck_mismatches[:3]}")
    assert {(o.status, o.error) for o in report.outcomes} <= {
        (200, None), (403, "budget_exceeded")}
    # The kill really interrupted the load: answers before it, requests failing during it.
    assert KILL_AFTER <= report.answered_before_kill < THREADS * PER_THREAD
    assert sum(o.failed_attempts for o in report.outcomes) >= 1
    # No more releases than the budget admits, and the budget is not lost: all of it is
    # spent on releases (more were asked for than it admits).
    assert len(released) <= ADMITTED
    assert len(released) == ADMITTED
    distinct = {o.query_id for o in released}
    assert len(distinct) == len(released)
    # Spent == what the distinct releases recorded at the node cost under the accountant
    # (zCDP composition of 100 releases of 0.05 proves less than their sum); each counted once.
    assert report.node_releases == len(distinct)
    assert math.isclose(report.spent, spent_for(report.node_releases, EPSILON), abs_tol=1e-9)
    assert math.isclose(report.total, admitting(ADMITTED, EPSILON))
    # Every received answer is recorded at the node (returned again as is, signature and
    # noise included) and no refused query was released; asking again charged nothing.
    assert report.recheck_mismatches == []
    assert report.refused_rechecked == THREADS * PER_THREAD - ADMITTED
    assert report.spent_after_recheck == report.spent
