"""Cryptographic building blocks of secure aggregation (``cryptography`` primitives only).

* **Key agreement**: X25519. Each node has two kinds of key pair per round: an *encryption*
  pair ``(c_u)`` for the shares it sends to peers, and one *mask* pair ``(s_u)`` per phase
  for the pairwise masks (Bonawitz et al., CCS 2017).
* **Key derivation**: HKDF-SHA256 over the X25519 shared secret, with an ``info`` string that
  names the purpose, the round, the phase and the (sorted) pair of node ids, so no key is
  ever used for two purposes, rounds or phases.
* **PRG**: the ChaCha20 keystream of a derived 32-byte key (zero nonce: every key is used
  once), read as little-endian ``uint64`` words and reduced to the ring.
* **Authenticated encryption** of shares: ChaCha20-Poly1305 with a random 96-bit nonce and
  associated data that binds round id, stage, sender and recipient.
* **Shamir secret sharing** over the prime field ``GF(p)``, ``p = 2**256 + 297`` (the
  smallest prime above ``2**256``; every secret is 32 bytes). A random polynomial of degree
  ``t - 1`` hides the secret from any ``t - 1`` shares; any ``t`` shares reconstruct it by
  Lagrange interpolation at zero.
"""

from __future__ import annotations

import base64
import secrets as _secrets
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols._secagg_encoding import RingWords
from protocols._secagg_errors import (
    ForgedMessageError,
    MalformedMessageError,
    SecAggParameterError,
)

__all__ = [
    "SECAGG_SECRET_BYTES",
    "SHAMIR_PRIME",
    "decrypt_share_payload",
    "encrypt_share_payload",
    "expand_mask",
    "field_element_from_b64",
    "field_element_to_b64",
    "generate_x25519_key",
    "lagrange_coefficients_at_zero",
    "load_x25519_public",
    "pairwise_mask_key",
    "reconstruct_secret",
    "secret_from_int",
    "secret_to_int",
    "self_mask_key",
    "share_encryption_key",
    "split_secret",
    "x25519_private_from_bytes",
    "x25519_private_to_bytes",
    "x25519_public_b64",
]

#: The Shamir field's prime: the smallest prime above 2**256 (checked by a test).
SHAMIR_PRIME = 2**256 + 297
#: Size of every shared secret (an X25519 private key, a self-mask seed).
SECAGG_SECRET_BYTES = 32
_FIELD_BYTES = 33
_DOMAIN = b"crimmis-dpn/secagg/v1"
_NONCE_BYTES = 12


# --- X25519 --------------------------------------------------------------------------------


def generate_x25519_key() -> X25519PrivateKey:
    """A fresh X25519 private key."""
    return X25519PrivateKey.generate()


def x25519_public_b64(key: X25519PrivateKey) -> str:
    """The raw 32-byte public key of ``key``, base64."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_x25519_public(text: str) -> X25519PublicKey:
    """Parse a base64 raw X25519 public key; :class:`MalformedMessageError` if it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise MalformedMessageError("not a base64 32-byte X25519 public key") from exc


def x25519_private_to_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte private key (what is Shamir-shared for a node's mask key)."""
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def x25519_private_from_bytes(raw: bytes) -> X25519PrivateKey:
    """The private key of 32 raw bytes (e.g. reconstructed from shares)."""
    try:
        return X25519PrivateKey.from_private_bytes(raw)
    except ValueError as exc:
        raise MalformedMessageError("not a 32-byte X25519 private key") from exc


def _agree(private: X25519PrivateKey, peer: X25519PublicKey) -> bytes:
    try:
        return private.exchange(peer)
    except ValueError as exc:  # a low-order point gives the all-zero secret
        raise MalformedMessageError("X25519 public key of low order refused") from exc


# --- key derivation -----------------------------------------------------------------------


def _derive_key(secret: bytes, *, info: bytes) -> bytes:
    """32 bytes of HKDF-SHA256(``secret``, salt none, ``info``)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _info(purpose: str, *parts: str) -> bytes:
    return b"|".join([_DOMAIN, purpose.encode(), *(p.encode("utf-8") for p in parts)])


def _pair(node_a: str, node_b: str) -> tuple[str, str]:
    first, second = sorted((node_a, node_b))
    return first, second


def share_encryption_key(
    private: X25519PrivateKey, peer: X25519PublicKey, *, round_id: str, node_a: str, node_b: str
) -> bytes:
    """The AEAD key two nodes share for the round's encrypted shares (same for both ends)."""
    return _derive_key(_agree(private, peer), info=_info("share-encryption", round_id,
                                                        *_pair(node_a, node_b)))


def pairwise_mask_key(
    private: X25519PrivateKey,
    peer: X25519PublicKey,
    *,
    round_id: str,
    phase: str,
    node_a: str,
    node_b: str,
) -> bytes:
    """The PRG key of the pairwise mask ``s_uv`` of two nodes in one phase of one round."""
    return _derive_key(_agree(private, peer), info=_info("pairwise-mask", round_id, phase,
                                                        *_pair(node_a, node_b)))


def self_mask_key(seed: bytes, *, round_id: str, phase: str) -> bytes:
    """The PRG key of a node's self mask ``b_u`` in one phase of one round."""
    if len(seed) != SECAGG_SECRET_BYTES:
        raise MalformedMessageError(f"a self-mask seed has {SECAGG_SECRET_BYTES} bytes")
    return _derive_key(seed, info=_info("self-mask", round_id, phase))


# --- PRG ----------------------------------------------------------------------------------


def expand_mask(key: bytes, *, length: int, modulus_bits: int) -> RingWords:
    """``length`` pseudo-random words below ``2**modulus_bits`` from a 32-byte key.

    ChaCha20 keystream (RFC 7539 block function, 128-bit counter-and-nonce all zero: each key
    is derived for one use) read as little-endian ``uint64``; uniform words reduced by a bit
    mask stay uniform because the modulus is a power of two.
    """
    if len(key) != 32:
        raise SecAggParameterError("a PRG key has 32 bytes")
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * length))
    words = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
    if modulus_bits < 64:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


# --- authenticated encryption -------------------------------------------------------------


def encrypt_share_payload(key: bytes, plaintext: bytes, *, associated_data: bytes) -> tuple[str,
                                                                                           str]:
    """ChaCha20-Poly1305 under ``key``: ``(nonce_b64, ciphertext_b64)``."""
    nonce = _secrets.token_bytes(_NONCE_BYTES)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)
    return base64.b64encode(nonce).decode("ascii"), base64.b64encode(ciphertext).decode("ascii")


def decrypt_share_payload(
    key: bytes, *, nonce_b64: str, ciphertext_b64: str, associated_data: bytes
) -> bytes:
    """Decrypt and authenticate; :class:`ForgedMessageError` if the tag does not verify
    (wrong key, altered ciphertext, or associated data of another round, stage, sender or
    recipient)."""
    try:
        nonce = base64.b64decode(nonce_b64, validate=True)
        ciphertext = base64.b64decode(ciphertext_b64, validate=True)
    except ValueError as exc:
        raise MalformedMessageError("encrypted share is not valid base64") from exc
    if len(nonce) != _NONCE_BYTES:
        raise MalformedMessageError(f"an encrypted share's nonce has {_NONCE_BYTES} bytes")
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag as exc:
        raise ForgedMessageError(
            "encrypted share does not authenticate (altered, or bound to another round, "
            "stage, sender or recipient)"
        ) from exc


# --- Shamir secret sharing ----------------------------------------------------------------


def secret_to_int(secret: bytes) -> int:
    """A 32-byte secret as a field element (big-endian)."""
    if len(secret) != SECAGG_SECRET_BYTES:
        raise SecAggParameterError(f"a shared secret has {SECAGG_SECRET_BYTES} bytes")
    return int.from_bytes(secret, "big")


def secret_from_int(value: int) -> bytes:
    """The 32-byte secret of a reconstructed field element; :class:`MalformedMessageError`
    if it is too large to be one (the shares were inconsistent)."""
    if not 0 <= value < 1 << (8 * SECAGG_SECRET_BYTES):
        raise MalformedMessageError("reconstructed value is not a 32-byte secret: bad shares")
    return value.to_bytes(SECAGG_SECRET_BYTES, "big")


def field_element_to_b64(value: int) -> str:
    """A field element as 33 big-endian bytes, base64."""
    return base64.b64encode(value.to_bytes(_FIELD_BYTES, "big")).decode("ascii")


def field_element_from_b64(text: str) -> int:
    """Parse :func:`field_element_to_b64`; :class:`MalformedMessageError` if not in the field."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise MalformedMessageError("a share value is not valid base64") from exc
    value = int.from_bytes(raw, "big")
    if len(raw) != _FIELD_BYTES or value >= SHAMIR_PRIME:
        raise MalformedMessageError("a share value is not an element of the Shamir field")
    return value


def split_secret(secret: int, *, threshold: int, x_coordinates: Iterable[int]) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for a random ``f`` of degree ``threshold - 1`` with
    ``f(0) = secret``; any ``threshold`` of them reconstruct it, fewer reveal nothing."""
    xs = list(x_coordinates)
    if not 0 <= secret < SHAMIR_PRIME:
        raise SecAggParameterError("the secret is not an element of the Shamir field")
    if threshold < 1 or threshold > len(xs):
        raise SecAggParameterError(f"threshold {threshold} needs 1 <= t <= {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < SHAMIR_PRIME for x in xs):
        raise SecAggParameterError("share x-coordinates must be distinct and non-zero")
    coefficients = [secret, *(_secrets.randbelow(SHAMIR_PRIME) for _ in range(threshold - 1))]
    shares = {}
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):  # Horner's rule
            value = (value * x + coefficient) % SHAMIR_PRIME
        shares[x] = value
    return shares


def lagrange_coefficients_at_zero(x_coordinates: Sequence[int]) -> dict[int, int]:
    """``{x_j: l_j(0)}`` of the Lagrange basis over ``x_coordinates``, so that
    ``f(0) = sum_j l_j(0) f(x_j)`` for every polynomial of degree below their number.

    Computed once per set of responders and reused for every secret they share.
    """
    xs = list(x_coordinates)
    if len(set(xs)) != len(xs) or any(not 0 < x < SHAMIR_PRIME for x in xs):
        raise MalformedMessageError("share x-coordinates must be distinct and non-zero")
    coefficients = {}
    for j, xj in enumerate(xs):
        numerator, denominator = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                numerator = numerator * xm % SHAMIR_PRIME
                denominator = denominator * (xm - xj) % SHAMIR_PRIME
        coefficients[xj] = numerator * pow(denominator, -1, SHAMIR_PRIME) % SHAMIR_PRIME
    return coefficients


def reconstruct_secret(
    shares: Mapping[int, int],
    *,
    threshold: int,
    coefficients: Mapping[int, int] | None = None,
) -> int:
    """The secret ``f(0)`` from at least ``threshold`` shares ``{x: f(x)}``.

    Uses the first ``threshold`` shares (by x); ``coefficients`` may pass precomputed
    :func:`lagrange_coefficients_at_zero` for exactly those x-coordinates.
    """
    if len(shares) < threshold:
        raise SecAggParameterError(f"{len(shares)} shares cannot reconstruct (threshold "
                                   f"{threshold})")
    used = sorted(shares)[:threshold]
    if coefficients is None or sorted(coefficients) != used:
        coefficients = lagrange_coefficients_at_zero(used)
    return sum(coefficients[x] * shares[x] for x in used) % SHAMIR_PRIME
