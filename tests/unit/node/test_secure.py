"""The node's secure-aggregation jobs (node._secure): what it checks before joining a round,
refusals, idempotent replies, and the budget and ledger charge of its masked input."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import coordinator._secagg as server
import node
import node._secagg as client
from node._db import utcnow
from protocols import (
    FIXED_POINT_SCALE,
    SecAggConfig,
    SecAggJob,
    SecAggPhase,
    SecAggStage,
    SecureAggregateQuery,
    generate_private_key,
    payload_digest,
    plan_secagg_round,
    public_key_b64,
    zcdp_epsilon,
)
from tests.unit.node.conftest import cobalt_query, insert_records, make_record

PEERS = ["bolt", "core"]


def secure(**overrides: Any) -> SecureAggregateQuery:
    fields: dict[str, Any] = {"flows": ["production"], "group_by": ["country"],
                              "bounds": {"record_clip": 1000.0, "unit_sum_bound": 1000.0}}
    fields.update(overrides)
    return SecureAggregateQuery(query=cobalt_query(**fields), clip=100_000)


def plan(sq: SecureAggregateQuery, ids: list[str], **overrides: Any) -> SecAggConfig:
    q = sq.query
    options: dict[str, Any] = {
        "node_ids": ids, "cells": q.cell_count(), "clip": round(sq.clip * FIXED_POINT_SCALE),
        "l1_sensitivity": round(q.bounds.unit_sum_bound * FIXED_POINT_SCALE),
        "rho": sq.target_rho(), "round_id": q.query_id}
    options.update(overrides)
    return plan_secagg_round(**options)


def job(stage: SecAggStage, round_id: str, phase: SecAggPhase | None = None,
        **inputs: Any) -> SecAggJob:
    now = utcnow()
    return SecAggJob.model_validate({
        "job_id": uuid.uuid4().hex, "round_id": round_id, "stage": stage, "phase": phase,
        "deadline": now + timedelta(seconds=30), "round_deadline": now + timedelta(minutes=3),
        **inputs})


def advertise_job(context: node.NodeContext, sq: SecureAggregateQuery,
                  config: SecAggConfig, keys: dict[str, str]) -> SecAggJob:
    return job(SecAggStage.ADVERTISE_KEYS, config.round_id, secure_query=sq, config=config,
               identity_keys=keys)


def test_the_policy_applies_to_the_converted_cost(
        make_node: Callable[..., node.NodeContext]) -> None:
    context = make_node(max_epsilon_per_release=2.0)
    sq = secure()
    config = plan(sq, ["acme", *PEERS])
    epsilon = node.check_secure_query(context, sq, config)
    assert epsilon == pytest.approx(zcdp_epsilon(config.released_rho(), 1e-6))
    assert 0.9 < epsilon <= 1.0 + 1e-9
    context.policy.budget.max_epsilon_per_release = 0.5
    with pytest.raises(node.QueryRefusedError, match="exceeds this node's maximum per release"):
        node.check_secure_query(context, sq, config)
    context.policy.budget.max_epsilon_per_release = 2.0
    context.policy.release.allowed_commodities = ["lithium"]  # type: ignore[list-item]
    with pytest.raises(node.QueryRefusedError, match="commodity cobalt is not allowed"):
        node.check_secure_query(context, sq, config)


def test_a_round_that_does_not_match_the_query_is_refused(
        make_node: Callable[..., node.NodeContext]) -> None:
    context = make_node()
    sq = secure()
    too_small = plan(sq, ["acme", *PEERS], l1_sensitivity=10)
    with pytest.raises(node.QueryRefusedError, match="noise would be too small"):
        node.check_secure_query(context, sq, too_small)
    thin_l2 = plan(sq, ["acme", *PEERS], l2_sensitivity=1000)
    with pytest.raises(node.QueryRefusedError, match="noise would be too small"):
        node.check_secure_query(context, sq, thin_l2)
    elsewhere = plan(sq, ["dune", *PEERS])
    with pytest.raises(node.QueryRefusedError, match="not among the round's nodes"):
        node.check_secure_query(context, sq, elsewhere)
    lax = plan(sq, ["acme", *PEERS], dominance_percent=95)
    with pytest.raises(node.QueryRefusedError, match="dominance threshold 95%"):
        node.check_secure_query(context, sq, lax)


def test_refusals_unknown_rounds_manual_approval_and_repeats(
        make_node: Callable[..., node.NodeContext]) -> None:
    context = make_node()
    memory = node.SecureRoundsMemory()
    keys = {n: public_key_b64(generate_private_key()) for n in PEERS}
    keys["acme"] = context.public_key
    sq = secure()
    config = plan(sq, ["acme", *PEERS])
    # A step of a round this node does not know (e.g. it restarted): refused cleanly.
    unknown = job(SecAggStage.UNMASK, config.round_id, SecAggPhase.SUM, unmask_request={
        "round_id": config.round_id, "phase": "sum", "survivors": ["acme", *PEERS],
        "dropped": []})
    refused = node.handle_secagg_job(context=context, memory=memory, job=unknown)
    assert refused.refusal is not None and refused.refusal.reason == "unknown_round"
    assert "restarted" in refused.refusal.message
    # A job held for manual approval cannot wait for a person: refused, with the reason.
    context.policy.approval = node.ApprovalPolicy(default="manual")
    held = node.handle_secagg_job(context=context, memory=memory,
                                  job=advertise_job(context, sq, config, keys))
    assert held.refusal is not None and held.refusal.reason == "approval_required"
    assert memory.rounds == {}
    # Automatic: the node advertises; the same job again gets the same reply.
    context.policy.approval = node.ApprovalPolicy(default="automatic")
    first = advertise_job(context, sq, config, keys)
    sent = node.handle_secagg_job(context=context, memory=memory, job=first)
    assert sent.advertisement is not None and sent.advertisement.sender == "acme"
    assert node.handle_secagg_job(context=context, memory=memory, job=first) == sent
    # A second advertise job for the same round (new job id) is a protocol refusal.
    second = node.handle_secagg_job(context=context, memory=memory,
                                    job=advertise_job(context, sq, config, keys))
    assert second.refusal is not None and second.refusal.reason == "protocol"
    # Rounds are forgotten after their deadline.
    memory.forget_expired(utcnow() + timedelta(hours=1))
    assert memory.rounds == {}


def test_the_masked_input_is_charged_once_and_recorded_in_the_ledger(
        make_node: Callable[..., node.NodeContext]) -> None:
    context = make_node()
    insert_records(context, [make_record(f"r{i}", quantity_t=400.0, unit=f"site:{i}",
                                         country="COD") for i in range(3)])
    memory = node.SecureRoundsMemory()
    peers = {n: generate_private_key() for n in PEERS}
    keys = {n: public_key_b64(k) for n, k in peers.items()} | {"acme": context.public_key}
    sq = secure()
    config = plan(sq, ["acme", *PEERS])
    hub = server.start_round(config=config, identity_keys=keys)
    states = {}
    mine = node.handle_secagg_job(context=context, memory=memory,
                                  job=advertise_job(context, sq, config, keys))
    assert mine.advertisement is not None
    server.receive_advertisement(hub, mine.advertisement)
    for n, key in peers.items():
        states[n], advert = client.advertise_keys(config=config, node_id=n, identity_key=key)
        server.receive_advertisement(hub, advert)
    roster = server.broadcast_roster(hub)
    shares = node.handle_secagg_job(context=context, memory=memory, job=job(
        SecAggStage.SHARE_KEYS, config.round_id, roster=roster))
    assert shares.shares is not None
    server.receive_shares(hub, shares.shares)
    for n in PEERS:
        server.receive_shares(hub, client.share_keys(states[n], roster=roster,
                                                     identity_keys=keys))
    forwarded = server.forward_shares(hub)
    masked_job = job(SecAggStage.MASKED_INPUT, config.round_id, SecAggPhase.SUM,
                     forwarded=forwarded["acme"])
    sent = node.handle_secagg_job(context=context, memory=memory, job=masked_job)
    assert sent.masked is not None and sent.masked.receipt is not None
    entries = node.ledger_entries(engine=context.engine)
    assert [(e.kind, e.query_id) for e in entries] == [("secure_aggregate", config.round_id)]
    assert entries[0].cost.rho == pytest.approx(config.released_rho())
    assert entries[0].payload_sha256 == payload_digest(sent.masked.masked.model_dump(mode="json"))
    assert sent.masked.receipt.payload_sha256 == entries[0].payload_sha256
    # A redelivered job: the same reply, no second charge, no second entry.
    assert node.handle_secagg_job(context=context, memory=memory, job=masked_job) == sent
    assert len(node.ledger_entries(engine=context.engine)) == 1
    # The sum the coordinator decodes holds this node's 1200 t in COD (and nothing in ZMB).
    server.receive_masked_input(hub, sent.masked.masked)
    for n in PEERS:
        server.receive_masked_input(hub, client.masked_input(
            states[n], forwarded=forwarded[n], cell_values=[0, 0]))
    request = server.request_unmask(hub, phase=SecAggPhase.SUM)
    reply = node.handle_secagg_job(context=context, memory=memory, job=job(
        SecAggStage.UNMASK, config.round_id, SecAggPhase.SUM, unmask_request=request))
    assert reply.unmask is not None
    server.receive_unmask_response(hub, reply.unmask)
    for n in PEERS:
        server.receive_unmask_response(hub, client.unmask(states[n], request=request))
    sums = server.unmask_phase(hub, phase=SecAggPhase.SUM)
    tail = 3 * config.noise_tail_bound
    assert abs(sums[0] - 1_200_000) <= tail and abs(sums[1]) <= tail
    assert sums[2:] == [1, 0]
