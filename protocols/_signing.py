"""Ed25519 signatures over canonical JSON (``cryptography`` primitives only)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from protocols._errors import SignatureError

__all__ = [
    "canonical_json",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "private_key_pem",
    "public_key_b64",
    "sign",
    "verify",
]


def _check_floats(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SignatureError("canonical JSON cannot encode NaN or infinity")
    if isinstance(value, dict):
        for v in value.values():
            _check_floats(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_floats(v)


def canonical_json(payload: Any) -> bytes:
    """The canonical encoding that is signed: sorted keys, no spaces, UTF-8, no NaN."""
    _check_floats(payload)
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM encoding of a private key (unencrypted: protect the file, mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Load a PEM private key written by :func:`private_key_pem`."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the key file does not hold an Ed25519 private key")
    return key


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64 (standard alphabet)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def key_id(public_key: str) -> str:
    """A short fingerprint of a base64 public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(base64.b64decode(public_key)).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, payload: Any) -> str:
    """Base64 Ed25519 signature over ``canonical_json(payload)``."""
    return base64.b64encode(key.sign(canonical_json(payload))).decode("ascii")


def verify(public_key: str, payload: Any, signature: str) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``public_key``'s over ``payload``."""
    try:
        raw_key = base64.b64decode(public_key, validate=True)
        raw_sig = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_sig, canonical_json(payload))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("signature does not verify against the registered key") from exc
