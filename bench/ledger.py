"""What the privacy ledger costs: per release at the node, and per entry for the auditor.

**Release overhead.** A node answers the same small aggregate query (cobalt, 2 countries x 2
flows, 2,000 records) with a fresh query id each time. Baseline: the DP computation alone
(load the records, bounded sums, OpenDP noise, signature) as the release had it before the
ledger. Measured: the whole release through :func:`node.answer_query`: policy check,
differencing guard, the reservation transaction, the computation, and the transaction that
settles, appends the signed ledger entry with its receipt and records the release (SQLite,
the embedded default, on local disk).

**Audit.** ``protocols.audit_node`` on ledgers of 1,000 and 10,000 entries with their receipts
(chain, hashes, two Ed25519 verifications per entry, budget recomputation) against the
baseline of SHA-256 over the same entries' canonical JSON alone.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._harness import Benchmark, Column, EntryResult, RunConfig, Table, measure
from protocols import (
    AggregateQuery,
    BudgetLimit,
    InMemoryLedger,
    LedgerExport,
    NodeAnswer,
    PrivacyCost,
    Receipt,
    audit_node,
    canonical_json,
    entry_hash,
    generate_private_key,
    key_id,
    public_key_b64,
)

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _query(epsilon: float = 0.001) -> AggregateQuery:
    return AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production", "export"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country", "flow"], "epsilon": epsilon,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 2000.0}, "purpose": "bench"})


def _records(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        country = "COD" if i % 2 else "ZMB"
        flow = "production" if i % 3 else "export"
        rows.append({"record_id": f"r{i}", "period": f"2024-{i % 12 + 1:02d}", "year": 2024,
                     "first_month": 2024 * 12 + i % 12, "last_month": 2024 * 12 + i % 12,
                     "commodity": "cobalt", "stage": "mining", "flow": flow,
                     "country": country, "partner_country": "CHN" if flow == "export" else None,
                     "quantity": 10.0, "unit": "t", "quantity_t": 10.0 + i % 7,
                     "contribution_unit": f"site:{country}-{i % 40}"})
    return rows


def _release_rows(config: RunConfig) -> list[dict[str, Any]]:
    import node
    from node._aggregate import compute_release
    from node._db import ImportRow, RecordRow
    from node._release import _signed, load_records

    repeats = 10 if config.quick else 40
    with tempfile.TemporaryDirectory() as tmp:
        coverage = [{"commodity": "cobalt", "stages": ["mining"],
                     "flows": ["production", "export"], "countries": ["COD", "ZMB"]}]
        policy = node.Policy.model_validate({"budget": {"epsilon_per_year": 100.0},
                                             "coverage": coverage})
        context = node.init_node(home=Path(tmp) / "n", node_id="bench", display_name="Bench",
                                 policy=policy)
        with context.engine.begin() as connection:
            connection.execute(ImportRow.__table__.insert().values(  # type: ignore[attr-defined]
                id=1, file_name="bench", sha256="0" * 64, mapping_sha256="0" * 64,
                row_count=2000, imported_at=_T0))
            connection.execute(RecordRow.__table__.insert(),  # type: ignore[attr-defined]
                               [{**r, "import_id": 1} for r in _records(2000)])

        def computation_only() -> None:
            query = _query()
            with context.engine.connect() as connection:
                records = load_records(connection=connection, query=query)
                connection.rollback()
            computed = compute_release(records, query, context.policy.coverage)
            _signed(context, NodeAnswer(
                query_id=query.query_id, node_id="bench", kind=query.kind,
                measure=query.measure, group_by=list(query.group_by), sums=computed.sums,
                epsilon=query.epsilon, accounting_periods=[2024], mechanism="bench",
                privacy_unit="bench", coverage=list(context.policy.coverage),
                released_at=_T0))

        def full_release() -> None:
            node.answer_query(context=context, query=_query())

        base = measure(computation_only, repeats=repeats)
        full = measure(full_release, repeats=repeats)
        entries = len(node.ledger_entries(engine=context.engine))
        context.engine.dispose()
    return [{"what": "DP computation + signature (baseline)", "ms": base.median * 1000,
             "ratio": 1.0, "entries": 0},
            {"what": "whole release with reservation, ledger entry and receipt",
             "ms": full.median * 1000, "ratio": full.ratio_to(base), "entries": entries}]


def _audit_rows(config: RunConfig) -> list[dict[str, Any]]:
    rows = []
    for size in ((1000,) if config.quick else (1000, 10_000)):
        key = generate_private_key()
        public = public_key_b64(key)
        ledger = InMemoryLedger(key, "bench", key_id(public))
        receipts = [ledger.record(query_id=f"{i:032x}", payload={"sums": [i, i + 1]},
                                  cost=PrivacyCost(epsilon=0.001), accounting_periods=[2024],
                                  recorded_at=_T0 + timedelta(seconds=i))
                    for i in range(size)]
        export = LedgerExport(node_id="bench", public_keys={key_id(public): public},
                              budgets={"all": BudgetLimit(epsilon=100.0)}, exported_at=_T0,
                              entries=ledger.entries)
        bodies = [e.body() for e in ledger.entries]

        base = measure(lambda bodies=bodies: [entry_hash(b) for b in bodies], repeats=3)
        full = measure(lambda e=export, r=receipts: _audit_ok(e, r), repeats=3)
        rows.append({"entries": size, "baseline_s": base.median, "audit_s": full.median,
                     "ratio": full.ratio_to(base),
                     "bytes": len(canonical_json(export.model_dump(mode="json")))})
    return rows


def _audit_ok(export: LedgerExport, receipts: list[Receipt]) -> None:
    report = audit_node(export, receipts, now=_T0)
    if not report.ok:
        raise AssertionError(f"the benchmark ledger failed its audit: {report.findings[:3]}")


def run(config: RunConfig) -> EntryResult:
    """Measure both tables."""
    return EntryResult(tables=[
        Table(title="Release at the node: median time per release (SQLite)", columns=[
            Column("what", "path", numeric=False), Column("ms", "median ms", ".2f"),
            Column("ratio", "ratio to baseline", ".2f"),
            Column("entries", "ledger entries written", ",d")],
            rows=_release_rows(config)),
        Table(title="Auditing a ledger: audit_node vs hashing the entries alone", columns=[
            Column("entries", "entries", ",d"), Column("baseline_s", "SHA-256 only (s)", ".3f"),
            Column("audit_s", "full audit (s)", ".3f"),
            Column("ratio", "ratio to baseline", ".1f"),
            Column("bytes", "export size (bytes)", ",d")],
            rows=_audit_rows(config)),
    ], notes=[
        "**Reading it.** The release ratio is what the reservation, the ledger entry, its "
        "receipt and the differencing guard add to a small release; on large queries the DP "
        "computation dominates and the ratio tends to 1. The audit's cost is dominated by two "
        "Ed25519 verifications per entry (entry and receipt).",
    ])


BENCHMARK = Benchmark(
    name="ledger",
    title="Privacy ledger: release overhead at the node and audit time",
    description=__doc__ or "",
    run=run,
)
