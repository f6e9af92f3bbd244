"""An audit of one node: its exported ledger against the coordinator's receipts and figures.

:func:`audit_node` runs every check of :mod:`protocols._ledger` and one more: every figure
the coordinator published with this node's contribution is traceable to a receipt. The same
function runs in ``dpn audit verify`` and behind the coordinator's auditor API, so auditors
get the same answer whichever they use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from protocols._accounting import guarantee
from protocols._ledger import (
    Finding,
    LedgerExport,
    Receipt,
    check_budgets,
    cross_check,
    spend_by_period,
    verify_chain,
)

__all__ = ["AuditReport", "PeriodSpend", "audit_node"]


class PeriodSpend(BaseModel):
    """Spend of one accounting period (all tiers), recomputed from the ledger."""

    period: int
    releases: int
    epsilon_pure: float
    rho: float
    epsilon: float = Field(description="proven epsilon at the budget's delta")
    budget: float | None = None
    within_budget: bool


class AuditReport(BaseModel):
    """What an audit of one node found."""

    node_id: str
    entries: int
    receipts: int
    chain_intact: bool
    signatures_valid: bool
    receipts_match: bool
    within_budget: bool
    figures_traceable: bool
    spend: list[PeriodSpend]
    findings: list[Finding]
    checked_at: datetime

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return not self.findings


_CHAIN = {"sequence_break", "chain_break", "hash_mismatch", "wrong_node"}
_SIGNATURES = {"bad_signature", "unknown_key"}
_RECEIPTS = {"bad_receipt", "missing_entry", "receipt_mismatch", "unreceipted_entry"}


def audit_node(ledger: LedgerExport, receipts: Sequence[Receipt], *, now: datetime,
               published: Mapping[str, str] | None = None,
               public_keys: Mapping[str, str] | None = None) -> AuditReport:
    """Audit ``ledger`` against the coordinator's ``receipts`` for the node.

    ``published`` maps the query ids of figures the coordinator published with this node's
    answer to a description; each must have a receipt. ``public_keys`` (from the
    coordinator's registry) override the keys the export carries, so a node cannot vouch for
    its own signatures.
    """
    keys = dict(public_keys if public_keys is not None else ledger.public_keys)
    entries = ledger.entries
    findings = verify_chain(entries, keys, node_id=ledger.node_id)
    findings += cross_check(entries, [r for r in receipts if r.node_id == ledger.node_id], keys)
    findings += check_budgets(entries, ledger.budgets)
    receipted = {r.query_id for r in receipts if r.node_id == ledger.node_id}
    untraced = [Finding(code="untraceable_figure", query_id=query_id,
                        message=f"published figure of query {query_id} ({what}) has no "
                                "receipt from this node")
                for query_id, what in sorted((published or {}).items())
                if query_id not in receipted]
    findings += untraced
    overall = ledger.budgets.get("all")
    spend = []
    counts: dict[int, int] = {}
    for entry in entries:
        for period in entry.accounting_periods:
            counts[period] = counts.get(period, 0) + 1
    for period, total in spend_by_period(entries).items():
        delta = overall.delta if overall is not None else 1e-6
        proven = guarantee(total, delta=delta)
        spend.append(PeriodSpend(
            period=period, releases=counts.get(period, 0), epsilon_pure=total.epsilon,
            rho=total.rho, epsilon=round(proven, 9),
            budget=overall.epsilon if overall is not None else None,
            within_budget=overall is None or overall.admits(total)))
    codes = {f.code for f in findings}
    return AuditReport(
        node_id=ledger.node_id, entries=len(entries),
        receipts=sum(r.node_id == ledger.node_id for r in receipts),
        chain_intact=not codes & _CHAIN, signatures_valid=not codes & _SIGNATURES,
        receipts_match=not codes & _RECEIPTS, within_budget="over_budget" not in codes,
        figures_traceable=not untraced, spend=spend, findings=findings, checked_at=now)
