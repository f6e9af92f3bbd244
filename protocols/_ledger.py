"""The privacy ledger: a node's append-only, hash-chained, signed record of every release.

Format (version :data:`LEDGER_VERSION`)
---------------------------------------
Each :class:`LedgerEntry` records one release: the job and query it answered, who asked and
why, the data tier, the mechanism, its :class:`~protocols.PrivacyCost`, the accounting periods
it was charged to, and the SHA-256 of the released payload (:func:`payload_digest`). Entries
are numbered ``1, 2, 3, ...``; each carries the hash of the one before (``prev_hash``; the
first carries :data:`GENESIS_HASH`), its own ``entry_hash`` (SHA-256 of the canonical JSON of
every other field but the signature) and the node's Ed25519 signature over that hash. With
each release the node hands the coordinator a :class:`Receipt`: the entry's number, hash and
payload digest, signed by the node. The coordinator stores receipts beside its query history.

What the auditor can show, without trusting either side (:func:`verify_chain`,
:func:`cross_check`):

* an entry edited after the fact breaks its hash and signature; one deleted, inserted or
  moved breaks the numbering and the ``prev_hash`` links at that point;
* entries cut off the *end* of a ledger leave the chain intact — but every release the
  coordinator received has a signed receipt, so a truncated ledger misses receipts;
* a receipt the node never signed fails its signature; a release in the ledger with no
  receipt at the coordinator is reported (it may be a release the coordinator never got).

Every finding names the entry (``seq``) or receipt it concerns, so a tampered ledger is
pinpointed, not only rejected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols._accounting import BudgetLimit, PrivacyCost, Spend, guarantee
from protocols._errors import SignatureError
from protocols._signing import canonical_json, sign, verify

__all__ = [
    "GENESIS_HASH",
    "LEDGER_VERSION",
    "Finding",
    "InMemoryLedger",
    "LedgerEntry",
    "LedgerExport",
    "Receipt",
    "ReleaseKind",
    "check_budgets",
    "cross_check",
    "entry_hash",
    "payload_digest",
    "seal_entry",
    "sign_receipt",
    "spend_by_period",
    "verify_chain",
]

LEDGER_VERSION = 1
#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64

ReleaseKind = Literal["aggregate", "synthetic", "secure_aggregate"]


def payload_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a released payload's canonical JSON: what a ledger entry commits to."""
    return hashlib.sha256(canonical_json(dict(payload))).hexdigest()


class LedgerEntry(BaseModel):
    """One release, as the node's ledger records it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = LEDGER_VERSION
    seq: Annotated[int, Field(ge=1)]
    prev_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    node_id: str
    key_id: str
    recorded_at: datetime
    job_id: str | None = None
    query_id: str
    requester: str
    purpose: str
    tier: str
    kind: ReleaseKind
    query: dict[str, Any] = Field(description="the query, as received (canonical JSON form)")
    mechanism: str
    cost: PrivacyCost
    accounting_periods: list[int]
    payload_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    entry_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    signature: str

    def body(self) -> dict[str, Any]:
        """Every field the hash covers (all but ``entry_hash`` and ``signature``)."""
        return self.model_dump(mode="json", exclude={"entry_hash", "signature"})


def entry_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an entry body's canonical JSON."""
    return hashlib.sha256(canonical_json(dict(body))).hexdigest()


def seal_entry(private_key: Any, body: Mapping[str, Any]) -> LedgerEntry:
    """Hash and sign an entry body (every field but ``entry_hash`` and ``signature``).

    The body is validated first and hashed in its serialised form, so what is hashed is
    exactly what an exported entry shows (e.g. times normalised to ``...Z``).
    """
    draft = LedgerEntry.model_validate({**body, "entry_hash": GENESIS_HASH, "signature": ""})
    digest = entry_hash(draft.body())
    return draft.model_copy(update={"entry_hash": digest,
                                    "signature": sign(private_key, {"entry_hash": digest})})


class Receipt(BaseModel):
    """The node's signed acknowledgement of one release, handed over with the result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    key_id: str
    seq: Annotated[int, Field(ge=1)]
    entry_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    query_id: str
    job_id: str | None = None
    payload_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    cost: PrivacyCost
    accounting_periods: list[int]
    signature: str

    def body(self) -> dict[str, Any]:
        """The signed fields."""
        return self.model_dump(mode="json", exclude={"signature"})


def sign_receipt(private_key: Any, entry: LedgerEntry) -> Receipt:
    """The receipt of ``entry``, signed by the node."""
    body = {"node_id": entry.node_id, "key_id": entry.key_id, "seq": entry.seq,
            "entry_hash": entry.entry_hash, "query_id": entry.query_id,
            "job_id": entry.job_id, "payload_sha256": entry.payload_sha256,
            "cost": entry.cost.model_dump(mode="json"),
            "accounting_periods": list(entry.accounting_periods)}
    return Receipt.model_validate({**body, "signature": sign(private_key, body)})


class LedgerExport(BaseModel):
    """What ``dpn node ledger export`` writes: the chain and what is needed to check it."""

    model_config = ConfigDict(extra="forbid")

    version: int = LEDGER_VERSION
    node_id: str
    public_keys: dict[str, str] = Field(description="key id -> Ed25519 public key (base64)")
    budgets: dict[str, BudgetLimit] = Field(
        default_factory=dict,
        description="the node's declared budget per tier ('all': every tier together)")
    exported_at: datetime
    entries: list[LedgerEntry]


class Finding(BaseModel):
    """One problem an audit found, and where."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="stable code, e.g. hash_mismatch, missing_entry")
    message: str
    seq: int | None = None
    query_id: str | None = None


@dataclass(frozen=True)
class _Where:
    seq: int
    query_id: str

    def fields(self) -> dict[str, Any]:
        return {"seq": self.seq, "query_id": self.query_id}


def _key(public_keys: Mapping[str, str], key_id: str) -> str | None:
    return public_keys.get(key_id)


def verify_chain(entries: Sequence[LedgerEntry], public_keys: Mapping[str, str],
                 *, node_id: str | None = None) -> list[Finding]:
    """Check numbering, hash links, hashes and signatures; one finding per break."""
    findings: list[Finding] = []
    expected_prev = GENESIS_HASH
    for position, entry in enumerate(entries, start=1):
        where = _Where(entry.seq, entry.query_id)
        if entry.seq != position:
            findings.append(Finding(
                code="sequence_break", **where.fields(),
                message=f"entry at position {position} is numbered {entry.seq}: an entry "
                        "was deleted, inserted or moved here"))
        if entry.prev_hash != expected_prev:
            findings.append(Finding(
                code="chain_break", **where.fields(),
                message=f"entry {entry.seq} does not link to the entry before it "
                        f"(prev_hash {entry.prev_hash[:12]}..., expected "
                        f"{expected_prev[:12]}...)"))
        if entry_hash(entry.body()) != entry.entry_hash:
            findings.append(Finding(
                code="hash_mismatch", **where.fields(),
                message=f"entry {entry.seq} was changed after it was recorded: its content "
                        "does not match its hash"))
        key = _key(public_keys, entry.key_id)
        if key is None:
            findings.append(Finding(code="unknown_key", **where.fields(),
                                    message=f"entry {entry.seq} is signed with unknown key "
                                            f"{entry.key_id}"))
        else:
            try:
                verify(key, {"entry_hash": entry.entry_hash}, entry.signature)
            except SignatureError:
                findings.append(Finding(code="bad_signature", **where.fields(),
                                        message=f"entry {entry.seq}: signature does not "
                                                "verify with the node's key"))
        if node_id is not None and entry.node_id != node_id:
            findings.append(Finding(code="wrong_node", **where.fields(),
                                    message=f"entry {entry.seq} belongs to node "
                                            f"{entry.node_id}, not {node_id}"))
        expected_prev = entry.entry_hash
    return findings


def cross_check(entries: Sequence[LedgerEntry], receipts: Sequence[Receipt],
                public_keys: Mapping[str, str]) -> list[Finding]:
    """Every receipt in the ledger and every ledger entry receipted, field by field."""
    findings: list[Finding] = []
    by_seq = {e.seq: e for e in entries}
    receipted: set[int] = set()
    for receipt in receipts:
        where = _Where(receipt.seq, receipt.query_id)
        key = _key(public_keys, receipt.key_id)
        try:
            if key is None:
                raise SignatureError("unknown key")
            verify(key, receipt.body(), receipt.signature)
        except SignatureError:
            findings.append(Finding(code="bad_receipt", **where.fields(),
                                    message=f"receipt for entry {receipt.seq} is not signed "
                                            "by the node"))
            continue
        entry = by_seq.get(receipt.seq)
        if entry is None:
            findings.append(Finding(code="missing_entry", **where.fields(),
                                    message=f"the coordinator holds a receipt for entry "
                                            f"{receipt.seq} (query {receipt.query_id}) that "
                                            "the ledger lacks"))
            continue
        receipted.add(receipt.seq)
        differing = [name for name in ("entry_hash", "query_id", "payload_sha256", "cost",
                                       "accounting_periods")
                     if getattr(entry, name) != getattr(receipt, name)]
        if differing:
            findings.append(Finding(code="receipt_mismatch", **where.fields(),
                                    message=f"entry {receipt.seq} differs from its receipt in "
                                            f"{', '.join(differing)}"))
    for entry in entries:
        if entry.seq not in receipted:
            findings.append(Finding(code="unreceipted_entry", seq=entry.seq,
                                    query_id=entry.query_id,
                                    message=f"entry {entry.seq} (query {entry.query_id}) has "
                                            "no receipt at the coordinator"))
    return findings


def spend_by_period(entries: Sequence[LedgerEntry], *, tier: str | None = None
                    ) -> dict[int, Spend]:
    """Recompute spend per accounting period from the entries (optionally of one tier)."""
    spend: dict[int, Spend] = {}
    for entry in entries:
        if tier is not None and entry.tier != tier:
            continue
        for period in entry.accounting_periods:
            spend[period] = spend.get(period, Spend()) + Spend.of(entry.cost)
    return dict(sorted(spend.items()))


def check_budgets(entries: Sequence[LedgerEntry], budgets: Mapping[str, BudgetLimit]
                  ) -> list[Finding]:
    """Spend per period (all tiers, and per tier with its own budget) within its budget."""
    findings: list[Finding] = []
    for tier, limit in sorted(budgets.items()):
        scoped = spend_by_period(entries, tier=None if tier == "all" else tier)
        for period, spend in scoped.items():
            if not limit.admits(spend):
                findings.append(Finding(
                    code="over_budget",
                    message=f"{period} ({tier}): spent epsilon "
                            f"{guarantee(spend, delta=limit.delta):.6g} at delta "
                            f"{limit.delta:g}, budget {limit.epsilon:g}"))
    return findings


class InMemoryLedger:
    """A ledger kept in memory with the same format and signatures as a node's.

    For tools and tests that play a node (fakes, benchmarks) and for auditors' fixtures; a
    real node keeps its ledger in its database (``node._ledger``).
    """

    def __init__(self, private_key: Any, node_id: str, key_id: str) -> None:
        self._key, self.node_id, self.key_id = private_key, node_id, key_id
        self.entries: list[LedgerEntry] = []

    def record(self, *, query_id: str, payload: Mapping[str, Any], cost: PrivacyCost,
               accounting_periods: list[int], recorded_at: datetime,
               query: Mapping[str, Any] | None = None, job_id: str | None = None,
               requester: str = "coordinator", purpose: str = "test", tier: str =
               "standardised", kind: ReleaseKind = "aggregate", mechanism: str = "test"
               ) -> Receipt:
        """Append one release; return its signed receipt."""
        prev = self.entries[-1].entry_hash if self.entries else GENESIS_HASH
        entry = seal_entry(self._key, {
            "version": LEDGER_VERSION, "seq": len(self.entries) + 1, "prev_hash": prev,
            "node_id": self.node_id, "key_id": self.key_id,
            "recorded_at": recorded_at.isoformat(), "job_id": job_id, "query_id": query_id,
            "requester": requester, "purpose": purpose, "tier": tier, "kind": kind,
            "query": dict(query or {}), "mechanism": mechanism,
            "cost": cost.model_dump(mode="json"), "accounting_periods": accounting_periods,
            "payload_sha256": payload_digest(payload)})
        self.entries.append(entry)
        return sign_receipt(self._key, entry)
