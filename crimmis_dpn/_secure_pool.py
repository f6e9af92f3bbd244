"""An in-process driver of secure aggregation: N simulated nodes and one coordinator.

:func:`run_secure_aggregation` plays every stage of ``node._secagg`` and
``coordinator._secagg`` in order, passing each message through its JSON wire form (so the
byte counts are those of the real messages), with optional dropouts. Tests and the
benchmark use it; the live pull-mode transport will call the same stage functions.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ParamSpec, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

import coordinator._secagg as server
import node._secagg as client
from protocols import (
    AdvertiseKeys,
    KeyRoster,
    SecAggConfig,
    SecAggPhase,
    SecurePoolResult,
    generate_private_key,
    public_key_b64,
)

__all__ = ["DropPoint", "SecureAggregationRun", "run_secure_aggregation"]

Message = TypeVar("Message", bound=BaseModel)
P = ParamSpec("P")


class DropPoint(StrEnum):
    """Where a simulated node stops answering (it did everything before that point)."""

    BEFORE_ADVERTISE = "before_advertise"  # never shows up
    BEFORE_SHARE_KEYS = "before_share_keys"  # advertised keys only
    BEFORE_MASKED_INPUT = "before_masked_input"  # shared keys, sent no input
    BEFORE_UNMASK = "before_unmask"  # sent its masked sum input, then vanished
    BEFORE_DOMINANCE = "before_dominance"  # completed the sum phase, skips the check


@dataclass
class SecureAggregationRun:
    """What one simulated round produced and cost.

    ``transcript``: every message the coordinator received, in order (what an
    honest-but-curious coordinator sees). Seconds and bytes are per node id (bytes sent and
    received, as serialized JSON) and for the coordinator.
    """

    result: SecurePoolResult
    transcript: list[BaseModel] = field(repr=False)
    node_seconds: dict[str, float]
    node_bytes_sent: dict[str, int]
    node_bytes_received: dict[str, int]
    coordinator_seconds: float
    coordinator_bytes_received: int
    coordinator_bytes_sent: int


class _Meter:
    """Wire round-trips, timings and byte counts of one simulated round."""

    def __init__(self) -> None:
        self.transcript: list[BaseModel] = []
        self.node_seconds: dict[str, float] = defaultdict(float)
        self.node_sent: dict[str, int] = defaultdict(int)
        self.node_received: dict[str, int] = defaultdict(int)
        self.coordinator_seconds = 0.0
        self.coordinator_received = 0
        self.coordinator_sent = 0

    def node_call(self, node_id: str, fn: Callable[P, Message], *args: P.args,
                  **kwargs: P.kwargs) -> Message:
        """Run a node's stage function and send its message to the coordinator."""
        start = time.perf_counter()
        message = fn(*args, **kwargs)
        wire = message.model_dump_json()
        self.node_seconds[node_id] += time.perf_counter() - start
        self.node_sent[node_id] += len(wire)
        self.coordinator_received += len(wire)
        start = time.perf_counter()
        received = type(message).model_validate_json(wire)
        self.coordinator_seconds += time.perf_counter() - start
        self.transcript.append(received)
        return received

    def coordinator_call(self, fn: Callable[P, object], *args: P.args,
                         **kwargs: P.kwargs) -> None:
        """Run a coordinator step that sends nothing."""
        start = time.perf_counter()
        fn(*args, **kwargs)
        self.coordinator_seconds += time.perf_counter() - start

    def broadcast(self, recipients: Sequence[str], fn: Callable[P, Message], *args: P.args,
                  **kwargs: P.kwargs) -> dict[str, Message]:
        """Run a coordinator step whose one message goes to every recipient."""
        start = time.perf_counter()
        message = fn(*args, **kwargs)
        wire = message.model_dump_json()
        self.coordinator_seconds += time.perf_counter() - start
        return {node: self._deliver(node, message, wire) for node in recipients}

    def send_each(self, recipients: Sequence[str], fn: Callable[P, Mapping[str, Message]],
                  *args: P.args, **kwargs: P.kwargs) -> dict[str, Message]:
        """Run a coordinator step with one message per recipient."""
        start = time.perf_counter()
        messages = fn(*args, **kwargs)
        wires = {node: messages[node].model_dump_json() for node in recipients}
        self.coordinator_seconds += time.perf_counter() - start
        return {node: self._deliver(node, messages[node], wires[node]) for node in recipients}

    def _deliver(self, node_id: str, message: Message, wire: str) -> Message:
        self.coordinator_sent += len(wire)
        self.node_received[node_id] += len(wire)
        start = time.perf_counter()
        parsed = type(message).model_validate_json(wire)
        self.node_seconds[node_id] += time.perf_counter() - start
        return parsed


def run_secure_aggregation(
    *,
    config: SecAggConfig,
    node_values: Mapping[str, Sequence[int]],
    identity_keys: Mapping[str, Ed25519PrivateKey] | None = None,
    dropouts: Mapping[str, DropPoint] | None = None,
) -> SecureAggregationRun:
    """Run one round of secure aggregation over ``config.node_ids`` in this process.

    ``node_values``: each node's exact fixed-point cell vector (``config.cells`` values).
    ``identity_keys``: the nodes' Ed25519 keys (fresh ones if omitted). ``dropouts``: nodes
    that stop answering at a :class:`DropPoint`. Raises what the stage functions raise,
    e.g. ``TooFewSurvivorsError`` when too many nodes drop out.
    """
    keys = dict(identity_keys or {node: generate_private_key() for node in config.node_ids})
    public = {node: public_key_b64(keys[node]) for node in config.node_ids}
    drops = dict(dropouts or {})
    meter = _Meter()

    def active(point: DropPoint, nodes: Sequence[str]) -> list[str]:
        order = list(DropPoint)
        return [n for n in nodes if n not in drops or order.index(drops[n]) > order.index(point)]

    state = server.start_round(config=config, identity_keys=public)
    states: dict[str, client.SecAggNodeState] = {}

    def advertise(node: str) -> AdvertiseKeys:
        states[node], advert = client.advertise_keys(config=config, node_id=node,
                                                     identity_key=keys[node])
        return advert

    nodes = active(DropPoint.BEFORE_ADVERTISE, list(config.node_ids))
    for node in nodes:
        advert = meter.node_call(node, advertise, node)
        meter.coordinator_call(server.receive_advertisement, state, advert)

    nodes = active(DropPoint.BEFORE_SHARE_KEYS, nodes)
    rosters = meter.send_each(nodes, _rosters, state, nodes)
    for node in nodes:
        shares = meter.node_call(node, client.share_keys, states[node], roster=rosters[node],
                                 identity_keys=public)
        meter.coordinator_call(server.receive_shares, state, shares)

    nodes = active(DropPoint.BEFORE_MASKED_INPUT, nodes)
    forwarded = meter.send_each(nodes, server.forward_shares, state)
    for node in nodes:
        masked = meter.node_call(node, client.masked_input, states[node],
                                 forwarded=forwarded[node], cell_values=node_values[node])
        meter.coordinator_call(server.receive_masked_input, state, masked)

    nodes = active(DropPoint.BEFORE_UNMASK, nodes)
    _unmask_phase(meter, state, states, nodes, SecAggPhase.SUM)

    nodes = active(DropPoint.BEFORE_DOMINANCE, nodes)
    requests = meter.broadcast(nodes, server.request_dominance, state)
    for node in nodes:
        masked = meter.node_call(node, client.dominance_input, states[node],
                                 request=requests[node])
        meter.coordinator_call(server.receive_masked_input, state, masked)
    _unmask_phase(meter, state, states, nodes, SecAggPhase.DOMINANCE)

    start = time.perf_counter()
    result = server.finish_round(state)
    meter.coordinator_seconds += time.perf_counter() - start
    return SecureAggregationRun(
        result=result,
        transcript=meter.transcript,
        node_seconds=dict(meter.node_seconds),
        node_bytes_sent=dict(meter.node_sent),
        node_bytes_received=dict(meter.node_received),
        coordinator_seconds=meter.coordinator_seconds,
        coordinator_bytes_received=meter.coordinator_received,
        coordinator_bytes_sent=meter.coordinator_sent,
    )


def _rosters(state: server.SecAggServerState, nodes: Sequence[str]) -> dict[str, KeyRoster]:
    """Each node's roster (everyone's keys, or its neighbours' with a sparse graph)."""
    server.broadcast_roster(state)
    return {node: server.roster_for(state, node) for node in nodes}


def _unmask_phase(meter: _Meter, state: server.SecAggServerState,
                  states: Mapping[str, client.SecAggNodeState], nodes: Sequence[str],
                  phase: SecAggPhase) -> None:
    """Unmask request to the nodes still answering, their responses, the sum."""
    requests = meter.broadcast(nodes, server.request_unmask, state, phase=phase)
    for node in nodes:
        response = meter.node_call(node, client.unmask, states[node], request=requests[node])
        meter.coordinator_call(server.receive_unmask_response, state, response)
    meter.coordinator_call(server.unmask_phase, state, phase=phase)
