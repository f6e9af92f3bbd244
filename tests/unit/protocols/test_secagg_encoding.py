"""Fixed-point ring encoding: round trips, wire form, and why overflow cannot happen."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import (
    MalformedMessageError,
    SecAggConfig,
    SecAggParameterError,
    SecAggPhase,
    add_words,
    check_no_overflow,
    decode_words,
    encode_values,
    noise_tail_bound,
    subtract_words,
    words_from_b64,
    words_to_b64,
)
from protocols._secagg_encoding import (
    check_count_no_overflow,
    count_bits_for,
    decode_segments,
    segments_from_b64,
    segments_to_b64,
)

FEW = settings(max_examples=120, deadline=None, database=None)


@st.composite
def node_vectors(draw: st.DrawFn) -> tuple[int, int, list[list[int]]]:
    """(modulus_bits, bound, vectors) with nodes * bound < 2**(bits-1)."""
    bits = draw(st.integers(min_value=16, max_value=64))
    nodes = draw(st.integers(min_value=1, max_value=40))
    bound = draw(st.integers(min_value=1, max_value=(2 ** (bits - 1) - 1) // nodes))
    cells = draw(st.integers(min_value=1, max_value=8))
    value = st.integers(min_value=-bound, max_value=bound)
    vectors = draw(st.lists(st.lists(value, min_size=cells, max_size=cells),
                            min_size=nodes, max_size=nodes))
    return bits, bound, vectors


@FEW
@given(node_vectors())
def test_sum_of_encoded_vectors_decodes_to_the_true_sum(
    case: tuple[int, int, list[list[int]]],
) -> None:
    bits, bound, vectors = case
    total = np.zeros(len(vectors[0]), dtype=np.uint64)
    for vector in vectors:
        total = add_words(total, encode_values(vector, bound=bound, modulus_bits=bits),
                          modulus_bits=bits)
    assert decode_words(total, modulus_bits=bits) == [sum(col) for col in zip(*vectors,
                                                                                strict=True)]
    # Masks cancel: adding and subtracting any word vector changes nothing.
    mask = np.arange(len(vectors[0]), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    mask &= np.uint64(2**bits - 1) if bits < 64 else np.uint64(2**64 - 1)
    masked = subtract_words(add_words(total, mask, modulus_bits=bits), mask, modulus_bits=bits)
    assert np.array_equal(masked, total)


@FEW
@given(
    nodes=st.integers(min_value=3, max_value=200),
    clip=st.integers(min_value=1, max_value=2**62),
    node_sigma=st.floats(min_value=0.5, max_value=1e12),
    cells=st.integers(min_value=1, max_value=10_000),
    bits=st.integers(min_value=16, max_value=64),
)
def test_an_accepted_config_cannot_overflow_and_a_refused_one_could(
    nodes: int, clip: int, node_sigma: float, cells: int, bits: int
) -> None:
    ids = tuple(f"node-{i:03d}" for i in range(nodes))
    fields = {"round_id": "0" * 32, "node_ids": ids, "threshold": nodes - nodes // 3,
              "min_survivors": nodes - nodes // 3, "cells": cells, "modulus_bits": bits,
              "clip": clip, "node_sigma": node_sigma, "l1_sensitivity": 1,
              "l2_sensitivity": 1}
    tail = noise_tail_bound(node_sigma=node_sigma, nodes=nodes, cells=cells)
    worst = nodes * (clip + tail)
    if worst >= 2 ** (bits - 1):
        with pytest.raises(SecAggParameterError, match="overflow"):
            SecAggConfig(**fields)
        return
    config = SecAggConfig(**fields)
    assert config.encoded_bound == clip + tail
    # The most extreme inputs every node may encode still decode to their true sum.
    for extreme in (config.encoded_bound, -config.noise_tail_bound):
        word = encode_values([extreme], bound=config.encoded_bound, modulus_bits=bits)
        total = np.zeros(1, dtype=np.uint64)
        for _ in range(nodes):
            total = add_words(total, word, modulus_bits=bits)
        assert decode_words(total, modulus_bits=bits) == [nodes * extreme]


def test_values_outside_the_bound_are_refused() -> None:
    with pytest.raises(SecAggParameterError):
        encode_values([11], bound=10, modulus_bits=64)
    with pytest.raises(SecAggParameterError):
        encode_values([1], bound=2**15, modulus_bits=16)
    with pytest.raises(SecAggParameterError):
        check_no_overflow(nodes=3, clip=2**20, tail_bound=0, modulus_bits=22)
    check_no_overflow(nodes=3, clip=2**19, tail_bound=0, modulus_bits=23)


def test_decoding_maps_the_top_half_to_negatives() -> None:
    words = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert decode_words(words, modulus_bits=64) == [0, 1, 2**63 - 1, -(2**63), -1]
    assert decode_words(np.array([2**15, 2**16 - 1], dtype=np.uint64), modulus_bits=16) == [
        -(2**15), -1]


@pytest.mark.parametrize("bits", [16, 20, 48, 64])
def test_wire_form_round_trips_and_uses_ceil_bits_over_8_bytes(bits: int) -> None:
    rng = np.random.default_rng(bits)
    words = rng.integers(0, 2**bits - 1, size=100, dtype=np.uint64, endpoint=True)
    text = words_to_b64(words, modulus_bits=bits)
    assert np.array_equal(words_from_b64(text, length=100, modulus_bits=bits), words)
    assert len(text) == 4 * -(-100 * ((bits + 7) // 8) // 3)


def test_malformed_wire_words_are_refused() -> None:
    words = np.arange(10, dtype=np.uint64)
    text = words_to_b64(words, modulus_bits=64)
    with pytest.raises(MalformedMessageError, match="expected 11 words"):
        words_from_b64(text, length=11, modulus_bits=64)
    with pytest.raises(MalformedMessageError, match="base64"):
        words_from_b64("***", length=10, modulus_bits=64)
    too_big = words_to_b64(np.array([2**20], dtype=np.uint64), modulus_bits=24)
    with pytest.raises(MalformedMessageError, match="below 2\\*\\*20"):
        words_from_b64(too_big, length=1, modulus_bits=20)


# --- the count segment (contributor flags, dominance indicators) ---------------------------


@FEW
@given(nodes=st.integers(min_value=1, max_value=1000), cells=st.integers(1, 12),
       data=st.data())
def test_packed_counts_round_trip_and_cannot_overflow(nodes: int, cells: int,
                                                      data: st.DataObject) -> None:
    """Every node adds 0 or 1 per cell (all ones included: the worst case) plus a uniform
    64-bit mask; the count segment travels in count_bits_for(nodes)-bit words, and removing
    the masks decodes the exact counts."""
    bits = count_bits_for(nodes)
    assert nodes < 2 ** (bits - 1) and (bits == 8 or nodes >= 2 ** (bits - 9))
    segments = ((cells, 64), (cells, bits))
    all_ones = data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    flags = np.ones((nodes, cells), dtype=np.int64) if all_ones else rng.integers(
        0, 2, size=(nodes, cells))
    sums = rng.integers(-(2**40), 2**40, size=(nodes, cells))
    total = np.zeros(2 * cells, dtype=np.uint64)
    masks = np.zeros(2 * cells, dtype=np.uint64)
    for node in range(nodes):
        plain = encode_values([*sums[node], *flags[node]], bound=2**62, modulus_bits=64)
        mask = rng.integers(0, 2**64, size=2 * cells, dtype=np.uint64)
        wire = segments_to_b64(add_words(plain, mask, modulus_bits=64), segments)
        received = segments_from_b64(wire, segments)
        assert bool((received[cells:] < 2**bits).all())
        total = add_words(total, received, modulus_bits=64)
        masks = add_words(masks, mask, modulus_bits=64)
    decoded = decode_segments(subtract_words(total, masks, modulus_bits=64), segments)
    assert decoded[cells:] == [int(c) for c in flags.sum(axis=0)]
    assert decoded[:cells] == [int(s) for s in sums.sum(axis=0)]


@FEW
@given(bits=st.integers(min_value=8, max_value=64), nodes=st.integers(1, 2**20))
def test_count_overflow_is_refused_exactly_when_it_could_happen(bits: int, nodes: int) -> None:
    if nodes < 2 ** (bits - 1):
        check_count_no_overflow(nodes=nodes, count_bits=bits)
        ones = np.ones(1, dtype=np.uint64)
        total = np.zeros(1, dtype=np.uint64)
        for _ in range(min(nodes, 300)):
            total = add_words(total, ones, modulus_bits=64)
        total = add_words(total, np.array([nodes - min(nodes, 300)], dtype=np.uint64),
                          modulus_bits=64)
        assert decode_segments(total, ((1, bits),)) == [nodes]
    else:
        with pytest.raises(SecAggParameterError, match="does not fit"):
            check_count_no_overflow(nodes=nodes, count_bits=bits)
        # and it really could: n ones wrap to a negative (or smaller) number
        total = np.array([nodes], dtype=np.uint64)
        assert decode_segments(total, ((1, bits),)) != [nodes]


def test_the_config_refuses_a_count_word_too_small_for_its_nodes() -> None:
    fields = {"round_id": "1" * 32, "node_ids": tuple(f"node-{i:03d}" for i in range(128)),
              "threshold": 86, "min_survivors": 86, "cells": 2, "clip": 10**6,
              "node_sigma": 10.0, "l1_sensitivity": 100, "l2_sensitivity": 100}
    with pytest.raises(SecAggParameterError, match="does not fit 8-bit"):
        SecAggConfig(**fields, count_bits=8)
    config = SecAggConfig(**fields, count_bits=16)
    assert config.segments(SecAggPhase.SUM) == ((2, 64), (2, 16))
    assert config.segments(SecAggPhase.DOMINANCE) == ((2, 16),)
    legacy = SecAggConfig(**fields)
    assert legacy.segments(SecAggPhase.SUM) == ((2, 64), (2, 64))


def test_a_segmented_vector_of_one_modulus_is_the_legacy_wire_form() -> None:
    words = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert segments_to_b64(words, ((2, 64), (2, 64))) == words_to_b64(words, modulus_bits=64)
    with pytest.raises(MalformedMessageError, match="expected 4 words"):
        segments_from_b64(words_to_b64(words[:3], modulus_bits=64), ((2, 64), (2, 8)))
    wide = np.array([1, 2, 2**13, 0], dtype=np.uint64)  # 2**13 is not a 12-bit word
    with pytest.raises(MalformedMessageError, match="not below 2"):
        segments_from_b64(words_to_b64(wide, modulus_bits=16), ((2, 16), (2, 12)))
