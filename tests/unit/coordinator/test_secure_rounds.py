"""The coordinator's secure rounds (coordinator._secure_rounds): planning, job delivery and
redelivery, checks on each node's reply, deadlines, and what a restart leaves.

Node messages come from the real node stage functions (``node._secagg``); receipts from an
in-memory ledger signed with the node's key."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

import node._secagg as client
from coordinator import (
    SQUARES_PURPOSE,
    CoordinatorContext,
    NodeStatus,
    SecureRoundError,
    SecureRounds,
    fail_lost_rounds,
    finalize_query,
    init_coordinator,
    next_secagg_job,
    receive_secagg_reply,
    secure_query_status,
    start_secure_query,
    submit_query,
    tick_secure_rounds,
)
from coordinator._db import NodeRow, QueryRow, utcnow
from protocols import (
    AggregateQuery,
    InMemoryLedger,
    MaskedRelease,
    PrivacyCost,
    Receipt,
    SecAggJob,
    SecAggReply,
    SecAggStage,
    SecureAggregateQuery,
    generate_private_key,
    key_id,
    public_key_b64,
)

IDS = ["acme", "bolt", "core", "dune"]


def query(**overrides: Any) -> AggregateQuery:
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country"], "epsilon": 1.0,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 1000.0}, "purpose": "unit test"}
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    context = init_coordinator(home=tmp_path / "coord", port=8799)
    yield context
    context.engine.dispose()


def enrol(hub: CoordinatorContext, ids: list[str], *, transport: str = "pull"
          ) -> dict[str, Ed25519PrivateKey]:
    keys = {n: generate_private_key() for n in ids}
    with Session(hub.engine) as session:
        for n, key in keys.items():
            session.add(NodeRow(node_id=n, display_name=n, public_key=public_key_b64(key),
                                key_id=key_id(public_key_b64(key)), transport=transport))
        session.commit()
    return keys


def reply(job: SecAggJob, **message: Any) -> SecAggReply:
    return SecAggReply.model_validate({"job_id": job.job_id, "round_id": job.round_id,
                                       "stage": job.stage, "phase": job.phase, **message})


def jobs(rounds: SecureRounds) -> dict[str, SecAggJob]:
    found = {}
    for n in IDS:
        job = next_secagg_job(rounds, node_id=n)
        if job is not None:
            found[n] = job
    return found


class Round:
    """A round driven by hand: the coordinator's functions, the nodes' stage functions."""

    def __init__(self, hub: CoordinatorContext, **options: Any) -> None:
        self.keys = enrol(hub, IDS)
        self.rounds = SecureRounds(engine=hub.engine, redeliver_seconds=5.0)
        self.query = query()
        self.status = start_secure_query(
            self.rounds, secure_query=SecureAggregateQuery(query=self.query, clip=10_000),
            **options)
        self.secure = self.rounds.rounds[self.query.query_id]
        self.states: dict[str, client.SecAggNodeState] = {}
        self.public = {n: public_key_b64(k) for n, k in self.keys.items()}

    def send(self, node_id: str, job: SecAggJob, **message: Any) -> bool:
        return receive_secagg_reply(self.rounds, node_id=node_id,
                                    public_key=self.public[node_id],
                                    reply=reply(job, **message))

    def advertise_and_share(self) -> dict[str, SecAggJob]:
        for n, job in jobs(self.rounds).items():
            assert job.config is not None
            self.states[n], advert = client.advertise_keys(config=job.config, node_id=n,
                                                           identity_key=self.keys[n])
            self.send(n, job, advertisement=advert)
        for n, job in jobs(self.rounds).items():
            assert job.roster is not None
            self.send(n, job, shares=client.share_keys(self.states[n], roster=job.roster,
                                                       identity_keys=self.public))
        return jobs(self.rounds)

    def masked(self, n: str, job: SecAggJob, values: list[int]) -> MaskedRelease:
        assert job.forwarded is not None
        masked = client.masked_input(self.states[n], forwarded=job.forwarded,
                                     cell_values=values)
        receipt = self.receipt(n, masked.model_dump(mode="json"),
                               self.secure.config.released_rho())
        return MaskedRelease(masked=masked, receipt=receipt)

    def receipt(self, n: str, payload: dict[str, Any], rho: float) -> Receipt:
        ledger = InMemoryLedger(self.keys[n], n, key_id(self.public[n]))
        return ledger.record(query_id=self.query.query_id, payload=payload,
                             cost=PrivacyCost(rho=rho), accounting_periods=[2024],
                             recorded_at=utcnow(), kind="secure_aggregate")


def test_a_round_is_planned_over_the_pull_nodes_and_recorded(hub: CoordinatorContext) -> None:
    enrol(hub, ["zinc"], transport="push")
    r = Round(hub)
    config = r.secure.config
    assert config.node_ids == tuple(IDS) and config.round_id == r.query.query_id
    assert (config.threshold, config.min_survivors, config.cells) == (3, 3, 2)
    assert config.l1_sensitivity == 1_000_000 and config.clip == 10_000_000
    assert r.status.status == "running" and r.status.step == "advertise_keys"
    with Session(hub.engine) as session:
        row = session.get(QueryRow, r.query.query_id)
        assert row is not None and (row.status, row.quorum) == ("running", 3)
    delivered = jobs(r.rounds)
    assert sorted(delivered) == IDS
    assert all(j.identity_keys == r.public for j in delivered.values())
    # Delivered jobs are not handed out again at once; after redeliver_seconds they are.
    assert jobs(r.rounds) == {}
    later = utcnow() + timedelta(seconds=6)
    again = next_secagg_job(r.rounds, node_id="acme", now=later)
    assert again is not None and again.job_id == delivered["acme"].job_id
    # The query stays running for the job-based finalizer (it has no jobs).
    assert finalize_query(engine=hub.engine, query_id=r.query.query_id) is False


def test_too_few_nodes_and_a_used_query_id_are_refused(hub: CoordinatorContext) -> None:
    enrol(hub, ["acme", "bolt"])
    rounds = SecureRounds(engine=hub.engine)
    with pytest.raises(SecureRoundError, match="at least 3 active pull-mode nodes; 2"):
        start_secure_query(rounds, secure_query=SecureAggregateQuery(query=query()))
    enrol(hub, ["core"])
    used = query()
    submit_query(engine=hub.engine, query=used, quorum=1, deadline_seconds=60)
    with pytest.raises(SecureRoundError, match="fresh query id"):
        start_secure_query(rounds, secure_query=SecureAggregateQuery(query=used))


def test_replies_are_checked_against_the_job_and_the_sender(hub: CoordinatorContext) -> None:
    r = Round(hub)
    delivered = jobs(r.rounds)
    job = delivered["acme"]
    assert job.config is not None
    _, bolts_advert = client.advertise_keys(config=job.config, node_id="bolt",
                                            identity_key=r.keys["bolt"])
    with pytest.raises(SecureRoundError, match="names sender 'bolt', but came from 'acme'"):
        r.send("acme", job, advertisement=bolts_advert)
    status = secure_query_status(r.rounds, query_id=r.query.query_id)
    acme = {n.node_id: n for n in status.nodes}["acme"]
    assert (acme.status, acme.step) == (NodeStatus.INVALID, "advertise_keys")
    # acme gets no further jobs; a repeat of the same reply is acknowledged as a duplicate.
    assert r.send("acme", job, advertisement=bolts_advert) is False
    with pytest.raises(SecureRoundError, match="not a participant"):
        receive_secagg_reply(r.rounds, node_id="zinc", public_key="x",
                             reply=reply(delivered["bolt"], refusal={"reason": "failed",
                                                                     "message": "no"}))
    stale = delivered["bolt"].model_copy(update={"job_id": uuid.uuid4().hex})
    with pytest.raises(SecureRoundError, match="not bolt's current step"):
        r.send("bolt", stale, refusal={"reason": "failed", "message": "no"})


def test_a_masked_input_needs_a_receipt_of_its_content_and_cost(hub: CoordinatorContext
                                                                ) -> None:
    r = Round(hub)
    forward = r.advertise_and_share()
    values = {n: [5_000_000 + i, 7_000_000] for i, n in enumerate(IDS)}
    # No receipt: refused, the node becomes a dropout.
    bare = r.masked("acme", forward["acme"], values["acme"]).model_copy(
        update={"receipt": None})
    with pytest.raises(SecureRoundError, match="no ledger receipt"):
        r.send("acme", forward["acme"], masked=bare)
    # A receipt of a smaller cost than the round's: refused.
    cheap = r.masked("bolt", forward["bolt"], values["bolt"])
    assert cheap.receipt is not None
    cheap = cheap.model_copy(update={"receipt": r.receipt(
        "bolt", cheap.masked.model_dump(mode="json"), 1e-6)})
    with pytest.raises(SecureRoundError, match="records rho"):
        r.send("bolt", forward["bolt"], masked=cheap)
    # Two valid inputs are not enough for t = 3: the round fails cleanly at the step's end.
    for n in ("core", "dune"):
        assert r.send(n, forward[n], masked=r.masked(n, forward[n], values[n]))
    assert r.secure.status == "failed"
    assert "masked_input/sum" in (r.secure.error or "") and "needs 3" in (r.secure.error or "")
    assert sorted(r.secure.receipts) == ["core", "dune"]


def test_a_full_round_by_hand_and_a_late_node(hub: CoordinatorContext) -> None:
    r = Round(hub, stage_seconds=5.0)
    forward = r.advertise_and_share()
    values = {n: [3_000_000 * (i + 1), 1_000_000] for i, n in enumerate(IDS)}
    for n, job in forward.items():
        r.send(n, job, masked=r.masked(n, job, values[n]))
    unmask = jobs(r.rounds)
    for n in ("acme", "bolt", "core"):  # dune goes quiet
        assert unmask[n].unmask_request is not None
        r.send(n, unmask[n], unmask=client.unmask(r.states[n], request=unmask[n].unmask_request))
    assert r.secure.step == (SecAggStage.UNMASK, unmask["acme"].phase)
    tick_secure_rounds(r.rounds, now=utcnow() + timedelta(seconds=6))
    dominance = jobs(r.rounds)
    assert sorted(dominance) == ["acme", "bolt", "core"]
    with pytest.raises(SecureRoundError, match="the step closed"):
        r.send("dune", unmask["dune"], refusal={"reason": "failed", "message": "late"})
    for n, job in dominance.items():
        assert job.dominance_request is not None
        r.send(n, job, masked=MaskedRelease(masked=client.dominance_input(
            r.states[n], request=job.dominance_request)))
    for n, job in jobs(r.rounds).items():
        assert job.unmask_request is not None
        r.send(n, job, unmask=client.unmask(r.states[n], request=job.unmask_request))
    status = secure_query_status(r.rounds, query_id=r.query.query_id)
    assert status.status == "completed"
    assert [c.reason for c in status.cells] == ["dominance_unchecked", "dominance_unchecked"]
    with Session(hub.engine) as session:
        row = session.get(QueryRow, r.query.query_id)
        assert row is not None and row.status == "completed" and row.result_json


def test_lost_rounds_fail_at_start_up_and_plain_queries_are_left(hub: CoordinatorContext
                                                                 ) -> None:
    r = Round(hub)
    plain = query()
    submit_query(engine=hub.engine, query=plain, quorum=1, deadline_seconds=60)
    fresh = SecureRounds(engine=hub.engine)  # a restarted process
    assert fail_lost_rounds(engine=hub.engine, rounds=fresh) == [r.query.query_id]
    status = secure_query_status(fresh, query_id=r.query.query_id)
    assert status.status == "failed" and "coordinator restarted" in (status.error or "")
    with Session(hub.engine) as session:
        row = session.get(QueryRow, plain.query_id)
        assert row is not None and row.status == "queued"
    # The process that holds the round does not fail it.
    assert fail_lost_rounds(engine=hub.engine, rounds=r.rounds) == []


def test_a_sum_of_squares_round_is_planned_at_the_finest_scale_that_cannot_overflow(
        hub: CoordinatorContext) -> None:
    enrol(hub, IDS)
    rounds = SecureRounds(engine=hub.engine)
    fine = SecureAggregateQuery(query=query(), clip=50_000.0, statistic="sum_of_squares")
    status = start_secure_query(rounds, secure_query=fine)
    assert status.statistic == "sum_of_squares" and status.clip == 50_000.0
    config = rounds.rounds[fine.query.query_id].config
    # kilograms squared; sensitivity min(2 B C, d C^2) = 2 * 1000 * 50,000 = 1e8 t^2, + 2
    assert config.scale == 10**6 and config.l1_sensitivity == 10**14 + 2
    assert config.clip == 50_000**2 * 10**6
    # clip 1e9 t with 4 nodes: only 1 unit per t^2 fits the 64-bit ring.
    coarse = SecureAggregateQuery(query=query(), clip=1e9, statistic="sum_of_squares")
    start_secure_query(rounds, secure_query=coarse)
    assert rounds.rounds[coarse.query.query_id].config.scale == 1
    too_big = SecureAggregateQuery(query=query(), clip=1e10, statistic="sum_of_squares")
    with pytest.raises(SecureRoundError, match="lower clip"):
        start_secure_query(rounds, secure_query=too_big)
    # The history marks the squares round (its stored query is an ordinary sum).
    with Session(hub.engine) as session:
        row = session.get(QueryRow, fine.query.query_id)
        assert row is not None and row.purpose.startswith(SQUARES_PURPOSE)
    assert secure_query_status(SecureRounds(engine=hub.engine),
                               query_id=fine.query.query_id).statistic == "sum_of_squares"
