"""Ed25519 signatures over canonical JSON."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import (
    ProtocolError,
    SignatureError,
    canonical_json,
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_b64,
    sign,
    verify,
)

# RFC 8032, section 7.1, TEST 1
RFC8032_SECRET = bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
RFC8032_PUBLIC = bytes.fromhex(
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)

PAYLOAD: dict[str, Any] = {
    "query_id": "0123456789abcdef0123456789abcdef",
    "cells": [{"key": ["cobalt", "COD"], "sum": 1234.5, "count": 17.0}],
    "epsilon": 0.5,
    "released_at": "2024-06-01T12:00:00Z",
    "note": "Kolwezi – Likasi",
}


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_private_key()


def test_sign_verify_round_trip(key: Ed25519PrivateKey) -> None:
    signature = sign(key, PAYLOAD)
    assert len(base64.b64decode(signature, validate=True)) == 64
    verify(public_key_b64(key), PAYLOAD, signature)


def test_signatures_are_deterministic(key: Ed25519PrivateKey) -> None:
    assert sign(key, PAYLOAD) == sign(key, dict(reversed(PAYLOAD.items())))


def test_verify_does_not_depend_on_key_order(key: Ed25519PrivateKey) -> None:
    signature = sign(key, {"a": 1, "b": [1, 2], "c": {"y": 1, "x": 2}})
    verify(public_key_b64(key), {"c": {"x": 2, "y": 1}, "b": [1, 2], "a": 1}, signature)


@pytest.mark.parametrize(
    "tampered",
    [
        {**PAYLOAD, "epsilon": 0.25},
        {**PAYLOAD, "cells": [{"key": ["cobalt", "COD"], "sum": 1234.6, "count": 17.0}]},
        {**PAYLOAD, "extra": None},
        {k: v for k, v in PAYLOAD.items() if k != "note"},
        {**PAYLOAD, "cells": [{"key": ["COD", "cobalt"], "sum": 1234.5, "count": 17.0}]},
    ],
)
def test_verify_fails_on_a_tampered_payload(
    key: Ed25519PrivateKey, tampered: dict[str, Any]
) -> None:
    signature = sign(key, PAYLOAD)
    with pytest.raises(SignatureError) as exc_info:
        verify(public_key_b64(key), tampered, signature)
    assert str(exc_info.value) == "signature does not verify against the registered key"


def test_verify_fails_with_another_key(key: Ed25519PrivateKey) -> None:
    other = generate_private_key()
    with pytest.raises(SignatureError):
        verify(public_key_b64(other), PAYLOAD, sign(key, PAYLOAD))


@pytest.mark.parametrize(
    "signature",
    ["not base64 at all!", "", "AAAA", base64.b64encode(b"\x00" * 64).decode(), "===="],
)
def test_verify_fails_on_garbage_signatures(key: Ed25519PrivateKey, signature: str) -> None:
    with pytest.raises(SignatureError):
        verify(public_key_b64(key), PAYLOAD, signature)


@pytest.mark.parametrize(
    "public_key", ["%%%", "", base64.b64encode(b"\x01" * 31).decode()]
)
def test_verify_fails_on_garbage_public_keys(key: Ed25519PrivateKey, public_key: str) -> None:
    with pytest.raises(SignatureError):
        verify(public_key, PAYLOAD, sign(key, PAYLOAD))


def test_a_flipped_signature_bit_fails(key: Ed25519PrivateKey) -> None:
    raw = bytearray(base64.b64decode(sign(key, PAYLOAD)))
    raw[10] ^= 0x01
    with pytest.raises(SignatureError):
        verify(public_key_b64(key), PAYLOAD, base64.b64encode(bytes(raw)).decode())


def test_signature_error_is_a_protocol_error() -> None:
    assert issubclass(SignatureError, ProtocolError)


# --- canonical JSON --------------------------------------------------------------------


def test_canonical_json_exact_bytes() -> None:
    payload = {"b": 1, "a": [1.5, "é", None, True], "c": {"z": -0.0, "y": "x"}}
    assert canonical_json(payload) == (
        '{"a":[1.5,"é",null,true],"b":1,"c":{"y":"x","z":-0.0}}'.encode()
    )


def test_canonical_json_is_key_order_independent() -> None:
    one = {"x": 1, "y": {"b": 2, "a": 3}, "z": [{"q": 1, "p": 2}]}
    two = {"z": [{"p": 2, "q": 1}], "y": {"a": 3, "b": 2}, "x": 1}
    assert canonical_json(one) == canonical_json(two)
    assert canonical_json(one) == b'{"x":1,"y":{"a":3,"b":2},"z":[{"p":2,"q":1}]}'


def test_canonical_json_keeps_list_order() -> None:
    assert canonical_json([2, 1]) != canonical_json([1, 2])


@pytest.mark.parametrize(
    "payload",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"a": [{"b": [1.0, -math.inf]}]},
        [0.0, (1.0, math.nan)],
        math.nan,
    ],
)
def test_canonical_json_refuses_nan_and_infinity(payload: Any) -> None:
    with pytest.raises(SignatureError) as exc_info:
        canonical_json(payload)
    assert str(exc_info.value) == "canonical JSON cannot encode NaN or infinity"


def test_signing_refuses_nan(key: Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError):
        sign(key, {"sum": math.nan})


# --- keys ------------------------------------------------------------------------------


def test_public_key_b64_of_the_rfc8032_test_key() -> None:
    secret = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    assert public_key_b64(secret) == base64.b64encode(RFC8032_PUBLIC).decode()
    assert public_key_b64(secret.public_key()) == public_key_b64(secret)


def test_key_id_is_16_hex_digits_of_the_sha256_of_the_raw_key(key: Ed25519PrivateKey) -> None:
    public = public_key_b64(key)
    kid = key_id(public)
    assert re.fullmatch(r"[0-9a-f]{16}", kid)
    assert kid == hashlib.sha256(base64.b64decode(public)).hexdigest()[:16]
    rfc = key_id(base64.b64encode(RFC8032_PUBLIC).decode())
    assert rfc == hashlib.sha256(RFC8032_PUBLIC).hexdigest()[:16]
    assert rfc != kid


def test_private_key_pem_round_trip(key: Ed25519PrivateKey) -> None:
    pem = private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pem.rstrip().endswith(b"-----END PRIVATE KEY-----")
    loaded = load_private_key(pem)
    assert public_key_b64(loaded) == public_key_b64(key)
    verify(public_key_b64(key), PAYLOAD, sign(loaded, PAYLOAD))


def test_loading_a_non_ed25519_key_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SignatureError) as exc_info:
        load_private_key(pem)
    assert str(exc_info.value) == "the key file does not hold an Ed25519 private key"


def test_generated_keys_differ() -> None:
    assert public_key_b64(generate_private_key()) != public_key_b64(generate_private_key())
