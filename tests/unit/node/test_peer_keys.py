"""Peers' identity keys pinned for secure aggregation (node._peer_keys): trust on first use,
a changed key refuses the round, the operator re-trusts a rotated key."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import node
from node._peer_keys import PEER_KEYS_FILE, check_peer_keys
from protocols import generate_private_key, key_id, public_key_b64


def new_key() -> str:
    return public_key_b64(generate_private_key())


OWN = new_key()


def test_the_first_round_pins_every_peer_and_later_rounds_pass(tmp_path: Path) -> None:
    keys = {"acme": OWN, "bolt": new_key(), "core": new_key()}
    assert check_peer_keys(home=tmp_path, identity_keys=keys, own_node_id="acme",
                           own_public_key=OWN) == ["bolt", "core"]
    pins = node.pinned_peer_keys(home=tmp_path)
    assert sorted(pins) == ["bolt", "core"]  # never its own
    assert pins["bolt"].key_id == key_id(keys["bolt"]) and pins["bolt"].source == "first_use"
    assert stat.S_IMODE((tmp_path / PEER_KEYS_FILE).stat().st_mode) == 0o600
    assert check_peer_keys(home=tmp_path, identity_keys=keys, own_node_id="acme",
                           own_public_key=OWN) == []
    # a new peer joins later: pinned then, the others unchanged
    keys["dune"] = new_key()
    assert check_peer_keys(home=tmp_path, identity_keys=keys, own_node_id="acme",
                           own_public_key=OWN) == ["dune"]
    assert node.pinned_peer_keys(home=tmp_path)["bolt"] == pins["bolt"]


def test_a_substituted_key_refuses_the_round_and_pins_nothing(tmp_path: Path) -> None:
    keys = {"acme": OWN, "bolt": new_key()}
    check_peer_keys(home=tmp_path, identity_keys=keys, own_node_id="acme", own_public_key=OWN)
    before = (tmp_path / PEER_KEYS_FILE).read_bytes()
    forged = new_key()
    with pytest.raises(node.QueryRefusedError) as refused:
        check_peer_keys(home=tmp_path, identity_keys={**keys, "bolt": forged, "core": new_key()},
                        own_node_id="acme", own_public_key=OWN)
    assert refused.value.rule == "peer_keys"
    message = str(refused.value)
    assert f"bolt (pinned key id {key_id(keys['bolt'])}, now {key_id(forged)})" in message
    assert "dpn node trust-peer" in message
    assert (tmp_path / PEER_KEYS_FILE).read_bytes() == before  # core was not pinned either


def test_the_round_is_refused_if_this_nodes_own_key_is_not_listed(tmp_path: Path) -> None:
    other = new_key()
    with pytest.raises(node.QueryRefusedError, match=f"key id {key_id(other)} instead of "
                                                     f"{key_id(OWN)}"):
        check_peer_keys(home=tmp_path, identity_keys={"acme": other, "bolt": new_key()},
                        own_node_id="acme", own_public_key=OWN)
    with pytest.raises(node.QueryRefusedError, match="key id none"):
        check_peer_keys(home=tmp_path, identity_keys={"bolt": new_key()},
                        own_node_id="acme", own_public_key=OWN)
    assert node.pinned_peer_keys(home=tmp_path) == {}


def test_the_operator_trusts_a_rotated_key(tmp_path: Path) -> None:
    keys = {"acme": OWN, "bolt": new_key()}
    check_peer_keys(home=tmp_path, identity_keys=keys, own_node_id="acme", own_public_key=OWN)
    rotated = new_key()
    pin = node.trust_peer(home=tmp_path, node_id="bolt", public_key=rotated)
    assert (pin.key_id, pin.source) == (key_id(rotated), "operator")
    assert check_peer_keys(home=tmp_path, identity_keys={**keys, "bolt": rotated},
                           own_node_id="acme", own_public_key=OWN) == []
    with pytest.raises(node.QueryRefusedError, match="bolt"):  # the old key is now refused
        check_peer_keys(home=tmp_path, identity_keys=keys, own_node_id="acme",
                        own_public_key=OWN)
    with pytest.raises(node.QueryRefusedError, match="not an Ed25519 public key"):
        node.trust_peer(home=tmp_path, node_id="core", public_key="not-a-key")


def test_a_damaged_pin_file_is_named(tmp_path: Path) -> None:
    (tmp_path / PEER_KEYS_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(node.NodeConfigError, match=f"{PEER_KEYS_FILE} is damaged"):
        check_peer_keys(home=tmp_path, identity_keys={"acme": OWN}, own_node_id="acme",
                        own_public_key=OWN)


def test_a_secure_round_with_a_substituted_peer_key_is_refused_at_the_node(
        make_node: Callable[..., node.NodeContext]) -> None:
    from tests.unit.node.test_secure import PEERS, advertise_job, plan, secure

    context = make_node()
    context.policy.approval = node.ApprovalPolicy(default="automatic")
    keys = {n: new_key() for n in PEERS}
    keys["acme"] = context.public_key
    sq = secure()
    first = node.handle_secagg_job(context=context, memory=node.SecureRoundsMemory(),
                                   job=advertise_job(context, sq, plan(sq, ["acme", *PEERS]),
                                                     keys))
    assert first.advertisement is not None
    assert sorted(node.pinned_peer_keys(home=context.home)) == PEERS
    sq = secure()  # the next round: the coordinator swaps bolt's key for one of its own
    swapped = {**keys, "bolt": new_key()}
    reply = node.handle_secagg_job(context=context, memory=node.SecureRoundsMemory(),
                                   job=advertise_job(context, sq, plan(sq, ["acme", *PEERS]),
                                                     swapped))
    assert reply.refusal is not None and reply.refusal.reason == "query_refused"
    assert "identity key of a peer differs" in reply.refusal.message
    assert reply.advertisement is None


def test_pins_written_by_several_processes_at_once_are_all_kept(tmp_path: Path) -> None:
    """The service pins at a round while `dpn node trust-peer` runs: no lost update. Four
    processes start together (after a common start time) and pin 100 peers each."""
    keys = {f"peer-{p}-{i}": new_key() for p in range(4) for i in range(100)}
    script = ("import json, sys, time; from pathlib import Path; import node\n"
              "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))\n"
              "for node_id, key in json.loads(sys.argv[2]).items():\n"
              "    node.trust_peer(home=Path(sys.argv[1]), node_id=node_id, public_key=key)\n")
    start = str(time.time() + 6.0)  # after every interpreter has imported the package
    workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), json.dumps(
        {n: k for n, k in keys.items() if n.startswith(f"peer-{p}-")}), start])
        for p in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0] * 4
    pins = node.pinned_peer_keys(home=tmp_path)
    assert {n: p.public_key for n, p in pins.items()} == keys


def test_a_key_rotation_signed_by_the_pinned_key_is_followed(tmp_path: Path) -> None:
    from tests.unit.protocols.test_key_rotation import rotation

    old, new, mallory = generate_private_key(), generate_private_key(), generate_private_key()
    keys = {"acme": OWN, "bolt": public_key_b64(old)}
    check_peer_keys(home=tmp_path, identity_keys=keys, own_node_id="acme", own_public_key=OWN)
    rotated = {**keys, "bolt": public_key_b64(new)}
    # a "rotation" signed by someone else (the coordinator) is no evidence: refused
    with pytest.raises(node.QueryRefusedError, match="identity key of a peer differs"):
        check_peer_keys(home=tmp_path, identity_keys=rotated, own_node_id="acme",
                        own_public_key=OWN, rotations={"bolt": [rotation(old, new,
                                                                         signer=mallory)]})
    assert node.pinned_peer_keys(home=tmp_path)["bolt"].public_key == public_key_b64(old)
    # bolt's own rotation, signed by the pinned key: followed, the new key pinned
    assert check_peer_keys(home=tmp_path, identity_keys=rotated, own_node_id="acme",
                           own_public_key=OWN, rotations={"bolt": [rotation(old, new)]}) == [
        "bolt"]
    pin = node.pinned_peer_keys(home=tmp_path)["bolt"]
    assert (pin.public_key, pin.source) == (public_key_b64(new), "rotation")
