"""Secure aggregation's crypto helpers: X25519/HKDF keys, the PRG, AEAD, Shamir sharing."""

from __future__ import annotations

import random

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import (
    SHAMIR_PRIME,
    ForgedMessageError,
    MalformedMessageError,
    SecAggError,
    SecAggParameterError,
    decrypt_share_payload,
    encrypt_share_payload,
    expand_mask,
    field_element_from_b64,
    field_element_to_b64,
    generate_x25519_key,
    lagrange_coefficients_at_zero,
    load_x25519_public,
    pairwise_mask_key,
    reconstruct_secret,
    secret_from_int,
    secret_to_int,
    self_mask_key,
    share_encryption_key,
    split_secret,
    x25519_private_from_bytes,
    x25519_private_to_bytes,
    x25519_public_b64,
)

FEW = settings(max_examples=60, deadline=None, database=None)
ROUND = "ab" * 16


def is_probable_prime(n: int, rounds: int = 40) -> bool:
    """Miller-Rabin with random bases (error below 4**-rounds)."""
    if n < 4:
        return n in (2, 3)
    if n % 2 == 0:
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    rng = random.Random(n)
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_shamir_prime_is_the_smallest_prime_above_2_to_256() -> None:
    assert SHAMIR_PRIME > 2**256
    assert is_probable_prime(SHAMIR_PRIME)
    assert not any(is_probable_prime(n) for n in range(2**256 + 1, SHAMIR_PRIME))


def test_x25519_keys_agree_on_the_same_share_and_mask_keys_from_both_ends() -> None:
    a, b = generate_x25519_key(), generate_x25519_key()
    pa, pb = load_x25519_public(x25519_public_b64(a)), load_x25519_public(x25519_public_b64(b))
    assert share_encryption_key(a, pb, round_id=ROUND, node_a="aa", node_b="bb") == \
        share_encryption_key(b, pa, round_id=ROUND, node_a="bb", node_b="aa")
    mask_ab = pairwise_mask_key(a, pb, round_id=ROUND, phase="sum", node_a="aa", node_b="bb")
    assert mask_ab == pairwise_mask_key(b, pa, round_id=ROUND, phase="sum", node_a="bb",
                                        node_b="aa")
    # Domain separation: another phase, round or purpose never gives the same key.
    others = {
        pairwise_mask_key(a, pb, round_id=ROUND, phase="dominance", node_a="aa", node_b="bb"),
        pairwise_mask_key(a, pb, round_id="cd" * 16, phase="sum", node_a="aa", node_b="bb"),
        share_encryption_key(a, pb, round_id=ROUND, node_a="aa", node_b="bb"),
    }
    assert mask_ab not in others and len(others) == 3


def test_private_keys_round_trip_through_bytes() -> None:
    key = generate_x25519_key()
    again = x25519_private_from_bytes(x25519_private_to_bytes(key))
    assert x25519_public_b64(again) == x25519_public_b64(key)


def test_low_order_and_malformed_public_keys_are_refused() -> None:
    with pytest.raises(MalformedMessageError):
        load_x25519_public("not base64!")
    with pytest.raises(MalformedMessageError):
        load_x25519_public("AAAA")
    zero = X25519PublicKey.from_public_bytes(bytes(32))  # a low-order point
    with pytest.raises(MalformedMessageError):
        share_encryption_key(generate_x25519_key(), zero, round_id=ROUND, node_a="aa",
                             node_b="bb")


def test_prg_is_deterministic_sized_and_reduced_to_the_ring() -> None:
    key = bytes(range(32))
    words = expand_mask(key, length=1000, modulus_bits=64)
    assert words.dtype == np.uint64 and words.shape == (1000,)
    assert np.array_equal(words, expand_mask(key, length=1000, modulus_bits=64))
    assert not np.array_equal(words, expand_mask(bytes(32), length=1000, modulus_bits=64))
    short = expand_mask(key, length=1000, modulus_bits=20)
    assert int(short.max()) < 2**20
    assert np.array_equal(short, words & np.uint64(2**20 - 1))
    assert self_mask_key(bytes(32), round_id=ROUND, phase="sum") != self_mask_key(
        bytes(32), round_id=ROUND, phase="dominance")


def test_aead_round_trip_and_every_binding_is_checked() -> None:
    key = bytes(32)
    nonce, ciphertext = encrypt_share_payload(key, b"shares", associated_data=b"round|a|b")
    assert decrypt_share_payload(key, nonce_b64=nonce, ciphertext_b64=ciphertext,
                                 associated_data=b"round|a|b") == b"shares"
    with pytest.raises(ForgedMessageError):  # bound to another recipient
        decrypt_share_payload(key, nonce_b64=nonce, ciphertext_b64=ciphertext,
                              associated_data=b"round|a|c")
    with pytest.raises(ForgedMessageError):  # wrong key
        decrypt_share_payload(bytes([1] * 32), nonce_b64=nonce, ciphertext_b64=ciphertext,
                              associated_data=b"round|a|b")
    with pytest.raises(MalformedMessageError):
        decrypt_share_payload(key, nonce_b64="AAAA", ciphertext_b64=ciphertext,
                              associated_data=b"round|a|b")


@FEW
@given(
    secret=st.integers(min_value=0, max_value=2**256 - 1),
    nodes=st.integers(min_value=1, max_value=15),
    data=st.data(),
)
def test_shamir_any_threshold_shares_reconstruct_and_fewer_do_not(
    secret: int, nodes: int, data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(min_value=1, max_value=nodes))
    xs = data.draw(st.lists(st.integers(min_value=1, max_value=1000), min_size=nodes,
                            max_size=nodes, unique=True))
    shares = split_secret(secret, threshold=threshold, x_coordinates=xs)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=threshold, max_size=nodes,
                                unique=True))
    assert reconstruct_secret({x: shares[x] for x in subset}, threshold=threshold) == secret
    if threshold >= 2:
        # t - 1 shares interpolate a polynomial of lower degree: its value at 0 is the
        # secret only with probability 1/p.
        fewer = {x: shares[x] for x in subset[: threshold - 1]}
        coefficients = lagrange_coefficients_at_zero(sorted(fewer))
        guess = sum(coefficients[x] * fewer[x] for x in fewer) % SHAMIR_PRIME
        assert guess != secret


def test_shamir_refuses_bad_parameters() -> None:
    with pytest.raises(SecAggParameterError):
        split_secret(1, threshold=4, x_coordinates=[1, 2, 3])
    with pytest.raises(SecAggParameterError):
        split_secret(1, threshold=2, x_coordinates=[1, 1, 3])
    with pytest.raises(SecAggParameterError):
        split_secret(SHAMIR_PRIME, threshold=2, x_coordinates=[1, 2])
    with pytest.raises(SecAggParameterError):
        reconstruct_secret({1: 5}, threshold=2)


def test_secrets_and_field_elements_round_trip_and_reject_garbage() -> None:
    secret = bytes(range(32))
    assert secret_from_int(secret_to_int(secret)) == secret
    with pytest.raises(MalformedMessageError):
        secret_from_int(2**256)
    value = SHAMIR_PRIME - 1
    assert field_element_from_b64(field_element_to_b64(value)) == value
    with pytest.raises(MalformedMessageError):
        field_element_from_b64(field_element_to_b64(SHAMIR_PRIME))
    with pytest.raises(MalformedMessageError):
        field_element_from_b64("AAAA")
    assert issubclass(MalformedMessageError, SecAggError)
