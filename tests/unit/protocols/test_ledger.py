"""The ledger format: every edit, deletion, reordering or insertion is detected and pinpointed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import (
    BudgetLimit,
    InMemoryLedger,
    LedgerEntry,
    LedgerExport,
    PrivacyCost,
    Receipt,
    audit_node,
    cross_check,
    generate_private_key,
    key_id,
    public_key_b64,
    seal_entry,
    spend_by_period,
    verify_chain,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _ledger(n: int = 5) -> tuple[InMemoryLedger, list[Receipt], dict[str, str]]:
    key = generate_private_key()
    public = public_key_b64(key)
    ledger = InMemoryLedger(key, "miner-a", key_id(public))
    receipts = [ledger.record(query_id=f"{i:032x}", payload={"sums": [i]},
                              cost=PrivacyCost(epsilon=0.5) if i % 2 else PrivacyCost(rho=0.01),
                              accounting_periods=[2024], recorded_at=T0 + timedelta(hours=i),
                              purpose=f"balance {i}")
                for i in range(n)]
    return ledger, receipts, {key_id(public): public}


def _codes(findings: list) -> set[tuple[str, int | None]]:  # type: ignore[type-arg]
    return {(f.code, f.seq) for f in findings}


def test_an_intact_ledger_and_its_receipts_pass() -> None:
    ledger, receipts, keys = _ledger()
    assert verify_chain(ledger.entries, keys, node_id="miner-a") == []
    assert cross_check(ledger.entries, receipts, keys) == []


def test_an_edited_entry_is_pinpointed() -> None:
    ledger, receipts, keys = _ledger()
    entries = list(ledger.entries)
    forged = entries[2].model_copy(update={"cost": PrivacyCost(epsilon=0.01)})
    entries[2] = forged
    assert ("hash_mismatch", 3) in _codes(verify_chain(entries, keys))
    assert ("receipt_mismatch", 3) in _codes(cross_check(entries, receipts, keys))


def test_a_resealed_edit_without_the_key_fails_its_signature() -> None:
    ledger, _, keys = _ledger()
    entries = list(ledger.entries)
    body = entries[1].body() | {"purpose": "innocent"}
    entries[1] = seal_entry(generate_private_key(), body)  # a forger's key
    findings = _codes(verify_chain(entries, keys))
    assert ("bad_signature", 2) in findings
    assert ("chain_break", 3) in findings  # the next entry links to the original hash


def test_a_deleted_entry_is_pinpointed() -> None:
    ledger, receipts, keys = _ledger()
    entries = [e for e in ledger.entries if e.seq != 3]
    findings = _codes(verify_chain(entries, keys))
    assert ("sequence_break", 4) in findings and ("chain_break", 4) in findings
    assert ("missing_entry", 3) in _codes(cross_check(entries, receipts, keys))


def test_reordered_entries_are_pinpointed() -> None:
    ledger, _, keys = _ledger()
    entries = list(ledger.entries)
    entries[1], entries[2] = entries[2], entries[1]
    findings = _codes(verify_chain(entries, keys))
    assert {("sequence_break", 3), ("sequence_break", 2)} <= findings


def test_an_inserted_entry_is_pinpointed() -> None:
    ledger, _, keys = _ledger()
    entries = list(ledger.entries)
    intruder = seal_entry(generate_private_key(), entries[0].body() | {"seq": 2})
    entries.insert(1, intruder)
    findings = _codes(verify_chain(entries, keys))
    assert ("bad_signature", 2) in findings
    assert ("sequence_break", 2) in findings  # the original entry 2 now sits third


def test_a_truncated_ledger_is_caught_by_the_receipts() -> None:
    ledger, receipts, keys = _ledger()
    entries = ledger.entries[:-2]
    assert verify_chain(entries, keys) == []  # the chain alone cannot see a cut tail
    assert {("missing_entry", 4), ("missing_entry", 5)} <= _codes(
        cross_check(entries, receipts, keys))


def test_a_forged_receipt_and_an_unreceipted_entry_are_reported() -> None:
    ledger, receipts, keys = _ledger()
    forged = receipts[0].model_copy(update={"signature": receipts[1].signature})
    findings = _codes(cross_check(ledger.entries, [forged, *receipts[1:-1]], keys))
    assert ("bad_receipt", 1) in findings
    assert ("unreceipted_entry", 5) in findings


def test_audit_checks_budgets_and_traceability() -> None:
    ledger, receipts, keys = _ledger(6)
    export = LedgerExport(node_id="miner-a", public_keys=keys, exported_at=T0,
                          budgets={"all": BudgetLimit(epsilon=1.0, delta=1e-6)},
                          entries=ledger.entries)
    report = audit_node(export, receipts, now=T0, published={"f" * 32: "cobalt balance"})
    codes = {f.code for f in report.findings}
    assert codes == {"over_budget", "untraceable_figure"}
    assert report.chain_intact and report.signatures_valid and report.receipts_match
    assert not report.within_budget and not report.figures_traceable
    (period,) = report.spend
    assert period.releases == 6 and period.epsilon_pure == pytest.approx(1.5)
    assert period.rho == pytest.approx(0.03)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_any_single_tampering_is_detected(data: st.DataObject) -> None:
    ledger, receipts, keys = _ledger(6)
    entries: list[LedgerEntry] = list(ledger.entries)
    action = data.draw(st.sampled_from(["edit", "delete", "swap", "duplicate"]))
    i = data.draw(st.integers(0, len(entries) - 2))
    if action == "edit":
        entries[i] = entries[i].model_copy(update={"requester": "someone else"})
    elif action == "delete":
        del entries[i]
    elif action == "swap":
        entries[i], entries[i + 1] = entries[i + 1], entries[i]
    else:
        entries.insert(i, entries[i])
    findings = verify_chain(entries, keys) + cross_check(entries, receipts, keys)
    assert findings, f"{action} at {i} went unnoticed"


def test_spend_by_period_splits_multi_year_releases() -> None:
    key = generate_private_key()
    ledger = InMemoryLedger(key, "n", key_id(public_key_b64(key)))
    ledger.record(query_id="a" * 32, payload={}, cost=PrivacyCost(epsilon=1.0),
                  accounting_periods=[2023, 2024], recorded_at=T0)
    ledger.record(query_id="b" * 32, payload={}, cost=PrivacyCost(epsilon=0.5), tier="bulk",
                  accounting_periods=[2024], recorded_at=T0)
    spend = spend_by_period(ledger.entries)
    assert {p: s.epsilon for p, s in spend.items()} == {2023: 1.0, 2024: 1.5}
    assert {p: s.epsilon for p, s in spend_by_period(ledger.entries, tier="bulk").items()
            } == {2024: 0.5}
