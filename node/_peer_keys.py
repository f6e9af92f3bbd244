"""Pinned identity keys of the other nodes, for secure aggregation (trust on first use).

In a secure-aggregation round a node encrypts its Shamir shares to its peers and checks their
advertised keys against the peers' Ed25519 identity keys, which the coordinator sends with
the round's first job. A coordinator that substituted keys of its own could read the shares
and unmask a node alone. So the node pins every peer's identity key the first time it sees
it (or as the operator set it from a list distributed out of band) in
``<home>/peer_keys.json`` (mode 0600), and refuses a round in which a pinned peer's key is
different, naming the peer and both key ids, unless the round also carries the peer's key
rotations (the ``rotate_key`` envelopes the coordinator accepted) and they lead from the
pinned key to the new one, each signed by the key it replaced
(:func:`protocols.follow_key_rotations`): the coordinator cannot forge those, so the new key
is pinned (``source = "rotation"``). Otherwise the operator trusts the new key after
checking it with the peer's company: ``dpn node trust-peer NODE_ID --key BASE64``.

Trust on first use protects against a coordinator that turns malicious after the first round
with a peer; pre-seeding the file from the pool's published list of key ids (``dpn node
trust-peer`` for each) protects from the start.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from node._errors import NodeConfigError, QueryRefusedError
from protocols import KeyRotation, follow_key_rotations, key_id

__all__ = [
    "PEER_KEYS_FILE",
    "PeerKey",
    "check_peer_keys",
    "pinned_peer_keys",
    "trust_peer",
]

#: The pinned keys, in the node's home.
PEER_KEYS_FILE = "peer_keys.json"
_LOCK = threading.Lock()


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Hold the pins for a read-modify-write: across threads, and across processes (the
    service pinning at a round while `dpn node trust-peer` runs) with ``flock``."""
    with _LOCK:
        fd = os.open(home / (PEER_KEYS_FILE + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


class PeerKey(BaseModel):
    """A peer's pinned Ed25519 public key (base64) and how it came to be trusted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    public_key: str
    key_id: str
    source: Literal["first_use", "operator", "rotation"]
    pinned_at: datetime


_PINS = TypeAdapter(dict[str, PeerKey])


def pinned_peer_keys(*, home: Path) -> dict[str, PeerKey]:
    """The pinned keys by node id (empty before the first secure round)."""
    path = home / PEER_KEYS_FILE
    if not path.is_file():
        return {}
    try:
        return _PINS.validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise NodeConfigError(f"{path} is damaged ({exc.__class__.__name__}: {exc}); restore "
                              "it from a backup, or delete it to pin every peer again at the "
                              "next secure round") from None


def _save(home: Path, pins: Mapping[str, PeerKey]) -> None:
    path = home / PEER_KEYS_FILE
    pending = path.with_suffix(".json.tmp")
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(_PINS.dump_json(dict(sorted(pins.items())), indent=2))
    os.replace(pending, path)


def check_peer_keys(*, home: Path, identity_keys: Mapping[str, str], own_node_id: str,
                    own_public_key: str,
                    rotations: Mapping[str, Sequence[KeyRotation]] | None = None,
                    now: datetime | None = None) -> list[str]:
    """Check a round's identity keys against the pins; pin the peers seen for the first time
    and the new keys of peers whose ``rotations`` lead from the pinned key to the listed one.

    Raises :class:`QueryRefusedError` (rule ``peer_keys``) naming every peer whose key
    differs from its pinned one without such a chain, or if the key listed for this node is
    not its own; nothing is pinned then. Returns the node ids pinned now.
    """
    listed = identity_keys.get(own_node_id)
    if listed != own_public_key:
        raise QueryRefusedError(
            "the coordinator lists a key for this node that is not its own (key id "
            f"{_kid(listed)} instead of {key_id(own_public_key)}); refusing the round",
            rule="peer_keys")
    when = now or datetime.now(UTC)
    with _locked(home):
        pins = pinned_peer_keys(home=home)
        changed, rotated = [], {}
        for node, key in sorted(identity_keys.items()):
            if node == own_node_id or node not in pins or pins[node].public_key == key:
                continue
            if follow_key_rotations((rotations or {}).get(node, ()), node_id=node,
                                    start=pins[node].public_key, target=key):
                rotated[node] = PeerKey(public_key=key, key_id=key_id(key), source="rotation",
                                        pinned_at=when)
            else:
                changed.append(f"{node} (pinned key id {pins[node].key_id}, now {_kid(key)})")
        if changed:
            raise QueryRefusedError(
                "the identity key of a peer differs from the one pinned at this node: "
                f"{'; '.join(changed)}. A coordinator substituting keys could read this "
                "node's shares. If the peer rotated its key, confirm the new key id with it "
                "and run `dpn node trust-peer NODE_ID --key NEW_KEY`", rule="peer_keys")
        new = {node: PeerKey(public_key=_checked(node, key), key_id=key_id(key),
                             source="first_use", pinned_at=when)
               for node, key in identity_keys.items() if node != own_node_id and node not in pins}
        if new or rotated:
            _save(home, {**pins, **new, **rotated})
        return sorted([*new, *rotated])


def trust_peer(*, home: Path, node_id: str, public_key: str,
               now: datetime | None = None) -> PeerKey:
    """Pin ``public_key`` for ``node_id`` as the operator's decision (replaces any pin)."""
    pin = PeerKey(public_key=_checked(node_id, public_key), key_id=key_id(public_key),
                  source="operator", pinned_at=now or datetime.now(UTC))
    with _locked(home):
        pins = pinned_peer_keys(home=home)
        _save(home, {**pins, node_id: pin})
    return pin


def _checked(node_id: str, public_key: str) -> str:
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise QueryRefusedError(f"the identity key given for {node_id} is not an Ed25519 "
                                f"public key in base64: {exc}", rule="peer_keys") from None
    return public_key


def _kid(public_key: str | None) -> str:
    if public_key is None:
        return "none"
    try:
        return key_id(public_key)
    except (ValueError, binascii.Error):
        return "unreadable"
