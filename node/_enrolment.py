"""Joining a pool: enrolment with a one-time token, the pinned coordinator key, key rotation.

The enrolment is kept in ``<home>/enrolment.json`` (mode 0600): the coordinator's URL and the
Ed25519 key its jobs must be signed with (pinned at enrolment; compare its fingerprint with
the one the operator gives you, ``--coordinator-key-id``).
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from node._errors import NodeConfigError, NodeError
from node._home import NodeContext
from protocols import (
    API_VERSION,
    COORDINATOR_ID,
    EnrolBody,
    EnrolledBody,
    EnvelopeError,
    ErrorBody,
    MessageKind,
    RotateKeyBody,
    SignedEnvelope,
    generate_private_key,
    key_id,
    open_envelope,
    private_key_pem,
    public_key_b64,
    seal_envelope,
    sign,
)

__all__ = [
    "ENROLMENT_FILE",
    "CoordinatorUnreachableError",
    "Enrolment",
    "EnrolmentRefusedError",
    "coordinator_tls",
    "enrol",
    "load_enrolment",
    "rotate_key",
]

ENROLMENT_FILE = "enrolment.json"


class CoordinatorUnreachableError(NodeError):
    """The coordinator could not be reached (the message names the address and the cause)."""


class EnrolmentRefusedError(NodeError):
    """The coordinator refused the enrolment or the key rotation."""


@dataclass(frozen=True)
class Enrolment:
    """Where the node's coordinator is and which key signs its jobs."""

    coordinator_url: str
    coordinator_public_key: str
    node_id: str

    @property
    def coordinator_key_id(self) -> str:
        """Fingerprint of the pinned coordinator key."""
        return key_id(self.coordinator_public_key)


def coordinator_tls(context: NodeContext) -> ssl.SSLContext | bool:
    """TLS verification for the coordinator: only the pinned certificate, if one is set."""
    ca_file = context.settings.coordinator_ca_file
    if ca_file is None:
        return True
    path = Path(ca_file) if Path(ca_file).is_absolute() else context.home / ca_file
    if not path.is_file():
        raise NodeConfigError(f"coordinator_ca_file {path} not found")
    return ssl.create_default_context(cafile=str(path))


def load_enrolment(home: Path) -> Enrolment | None:
    """The node's enrolment, or ``None`` if it has not enrolled."""
    path = home / ENROLMENT_FILE
    if not path.is_file():
        return None
    try:
        return Enrolment(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise NodeConfigError(f"{path} is damaged: {exc}; enrol again") from exc


def _save(home: Path, enrolment: Enrolment) -> None:
    path = home / ENROLMENT_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(enrolment), handle, indent=2)


def _post(context: NodeContext, url: str, signed: SignedEnvelope,
          client: httpx.Client | None) -> httpx.Response:
    try:
        if client is not None:
            return client.post(url, json=signed.model_dump(mode="json"))
        with httpx.Client(verify=coordinator_tls(context), timeout=30.0) as own:
            return own.post(url, json=signed.model_dump(mode="json"))
    except httpx.HTTPError as exc:
        raise CoordinatorUnreachableError(
            f"cannot reach the coordinator at {url}: {type(exc).__name__}: {exc}") from exc


def _refusal(response: httpx.Response) -> str:
    try:
        return ErrorBody.model_validate_json(response.content).message
    except ValidationError:
        return f"HTTP {response.status_code}: {response.text[:300]}"


def enrol(*, context: NodeContext, coordinator_url: str, token: str,
          expected_coordinator_key_id: str | None = None,
          client: httpx.Client | None = None) -> Enrolment:
    """Enrol with a one-time token; pin the coordinator's key; save the enrolment.

    ``client`` replaces the HTTP client (tests pass one bound to an in-process app).
    """
    base = coordinator_url.rstrip("/")
    signed = seal_envelope(
        context.private_key, sender=context.settings.node_id, recipient=COORDINATOR_ID,
        kind=MessageKind.ENROL,
        body=EnrolBody(token=token, node_id=context.settings.node_id,
                       display_name=context.settings.display_name,
                       public_key=context.public_key).model_dump(mode="json"),
    )
    response = _post(context, f"{base}/{API_VERSION}/enrol", signed, client)
    if response.status_code != 200:
        raise EnrolmentRefusedError(f"enrolment refused: {_refusal(response)}")
    reply = SignedEnvelope.model_validate_json(response.content)
    body = EnrolledBody.model_validate(reply.envelope.body)
    try:
        open_envelope(reply, public_key=body.coordinator_public_key,
                      recipient=context.settings.node_id, kinds={MessageKind.ENROLLED},
                      remember_nonce=lambda *_: True)
    except EnvelopeError as exc:
        raise EnrolmentRefusedError(f"the coordinator's reply does not verify: {exc}") from exc
    fingerprint = key_id(body.coordinator_public_key)
    if expected_coordinator_key_id is not None and fingerprint != expected_coordinator_key_id:
        raise EnrolmentRefusedError(
            f"the coordinator at {base} has key id {fingerprint}, expected "
            f"{expected_coordinator_key_id}: not saving this enrolment")
    enrolment = Enrolment(coordinator_url=base, coordinator_public_key=body.coordinator_public_key,
                          node_id=context.settings.node_id)
    _save(context.home, enrolment)
    return enrolment


def rotate_key(*, context: NodeContext, client: httpx.Client | None = None) -> str:
    """Replace the node's key at the coordinator and on disk; return the new key id.

    The new key is written to ``<key>.new`` first; it replaces the key file only once the
    coordinator has accepted it.
    """
    enrolment = load_enrolment(context.home)
    if enrolment is None:
        raise NodeConfigError("this node is not enrolled: run `dpn node enrol` first")
    new_key = generate_private_key()
    new_public = public_key_b64(new_key)
    key_path = context.home / context.settings.key_file
    pending = key_path.with_name(key_path.name + ".new")
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(new_key))
    proof = sign(new_key, {"node_id": context.settings.node_id, "new_public_key": new_public})
    signed = seal_envelope(
        context.private_key, sender=context.settings.node_id, recipient=COORDINATOR_ID,
        kind=MessageKind.ROTATE_KEY,
        body=RotateKeyBody(new_public_key=new_public, proof=proof).model_dump(mode="json"),
    )
    response = _post(context, f"{enrolment.coordinator_url}/{API_VERSION}/keys/rotate", signed,
                     client)
    if response.status_code != 200:
        pending.unlink()
        raise EnrolmentRefusedError(f"key rotation refused: {_refusal(response)}")
    os.replace(pending, key_path)
    context.private_key = new_key
    return key_id(new_public)
