"""One release, whatever it releases: reserve the budget, compute, then record everything at
once (settlement, ledger entry and receipt, release row, differencing memory).

Used by aggregate (:mod:`node._release`) and synthetic (:mod:`node._synthetic_release`)
releases. Guarantees:

* charged before it leaves: the reservation is made before computing and settled in the
  transaction that records the release; the caller returns only what was recorded;
* once per query id: a query id already released returns the stored release (no new noise,
  no new charge); a query id whose release is being computed is refused until it is done;
* nothing lost, nothing double-counted: a failure after the reservation gives it back
  (``void``); a crash leaves it counted until :func:`node.recover_reservations` gives it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from node._budget import reserve, settle, void
from node._db import ReleaseRow, ReservationRow, utcnow
from node._differencing import GuardedCells, remember_cells
from node._errors import QueryRefusedError
from node._home import NodeContext
from node._ledger import ReleaseOrigin, append_entry
from protocols import PrivacyCost, Receipt, ReleaseKind, canonical_json, parse_answer

__all__ = ["ReleaseSpec", "release_once", "stored_release"]

_RELEASES = ReleaseRow.__table__  # type: ignore[attr-defined]
_RESERVATIONS = ReservationRow.__table__  # type: ignore[attr-defined]
#: How long a second request for a query id being released waits for the first one's answer.
_AWAIT_SECONDS = 120.0
SignedT = TypeVar("SignedT", bound=BaseModel)


class ReleaseSpec(BaseModel):
    """What is being released, for the budget, the ledger and the release row."""

    query_id: str
    query: dict[str, Any]
    purpose: str
    kind: ReleaseKind
    mechanism: str
    cost: PrivacyCost
    accounting_periods: list[int]

    def query_text(self) -> str:
        """The query's canonical JSON (compared when a query id comes back)."""
        return canonical_json(self.query).decode("utf-8")


def stored_release(*, connection: Connection, spec: ReleaseSpec) -> Any | None:
    """The signed answer already released for ``spec.query_id``, if any."""
    row = connection.execute(select(_RELEASES.c.query_json, _RELEASES.c.answer_json)
                             .where(_RELEASES.c.query_id == spec.query_id)).first()
    if row is None:
        return None
    if row.query_json != spec.query_text():
        raise QueryRefusedError(f"query id {spec.query_id} was already used for a different "
                                "query; use a fresh query id", rule="query_id")
    return parse_answer(row.answer_json)


def release_once(*, context: NodeContext, spec: ReleaseSpec, origin: ReleaseOrigin,
                 compute: Callable[[], SignedT], guarded: GuardedCells | None = None,
                 payload: Callable[[SignedT], Mapping[str, Any]]) -> SignedT:
    """Reserve ``spec.cost``, run ``compute`` (which returns the signed answer without a
    receipt), and record the release with its ledger entry; return it with its receipt.

    Raises :class:`~node.BudgetExceededError` or :class:`~node.QueryRefusedError`; nothing is
    then charged or released.
    """
    with context.engine.begin() as connection:
        previous = stored_release(connection=connection, spec=spec)
    if previous is not None:
        return previous  # type: ignore[no-any-return]
    limits = context.policy.budget.limits(origin.tier)
    try:
        with context.engine.begin() as connection:
            reserve(connection=connection, query_id=spec.query_id, tier=str(origin.tier),
                    years=spec.accounting_periods, cost=spec.cost, limits=limits)
    except IntegrityError:
        # The same query id is being released by another worker: wait for its answer.
        return _await_release(context, spec)  # type: ignore[no-any-return]
    try:
        signed = compute()
        with context.engine.begin() as connection:
            settle(connection=connection, query_id=spec.query_id)
            _, receipt = append_entry(
                connection=connection, context=context, origin=origin,
                query_id=spec.query_id, purpose=spec.purpose, kind=spec.kind,
                query=spec.query, mechanism=spec.mechanism, cost=spec.cost,
                accounting_periods=spec.accounting_periods, payload=payload(signed))
            signed = _with_receipt(signed, receipt)
            connection.execute(insert(_RELEASES).values(
                query_id=spec.query_id,
                years=",".join(str(y) for y in spec.accounting_periods),
                epsilon_nano=round(spec.cost.epsilon * 1e9), kind=_row_kind(spec),
                purpose=spec.purpose, query_json=spec.query_text(),
                answer_json=json.dumps(signed.model_dump(mode="json")),
                released_at=utcnow()))
            remember_cells(connection=connection, guarded=guarded, query_id=spec.query_id)
    except BaseException:
        _give_back(context, spec.query_id)
        raise
    return signed


def _give_back(context: NodeContext, query_id: str) -> None:
    """Void the reservation of a release that failed; on a full disk, free the SQLite WAL first.

    When the disk fills between the reservation and the settlement, the failed settlement's
    pages take the last free space in the write-ahead log and the void cannot be written
    either: the spend would stay counted until the next start. Checkpointing the WAL into the
    database and truncating it frees that space (a checkpoint never loses a committed
    transaction), and the void is tried once more.
    """
    try:
        with context.engine.begin() as connection:
            void(connection=connection, query_id=query_id)
    except OperationalError:
        if context.engine.dialect.name != "sqlite":
            raise
        raw = context.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
        with context.engine.begin() as connection:
            void(connection=connection, query_id=query_id)


def _await_release(context: NodeContext, spec: ReleaseSpec) -> Any:
    deadline = time.monotonic() + _AWAIT_SECONDS
    while time.monotonic() < deadline:
        with context.engine.begin() as connection:
            previous = stored_release(connection=connection, spec=spec)
            pending = connection.execute(select(_RESERVATIONS.c.query_id).where(
                _RESERVATIONS.c.query_id == spec.query_id)).first()
        if previous is not None:
            return previous
        if pending is None:
            break  # the other attempt failed and gave its reservation back
        time.sleep(0.05)
    raise QueryRefusedError(f"query id {spec.query_id} is being released by another request "
                            "and has no answer yet; ask again in a moment for the stored "
                            "answer", rule="query_id")


def _row_kind(spec: ReleaseSpec) -> str:
    if spec.kind == "synthetic":
        return "synthetic"
    return str(spec.query.get("kind", spec.kind))


def _with_receipt(signed: SignedT, receipt: Receipt) -> SignedT:
    return signed.model_copy(update={"receipt": receipt})
