"""Fixed-point encoding of cell values into the ring ``Z_M``, ``M = 2**modulus_bits``.

Values are already fixed-point integers: ``round(value * scale)`` with an explicit ``scale``
(``protocols.FIXED_POINT_SCALE``, thousandths of the unit, by default). A node clips each
cell to ``[0, clip]``, adds its noise share, and maps the result ``v`` to the word
``v mod M`` (two's complement). Masks are uniform words of ``Z_M``; NumPy's ``uint64``
arithmetic wraps modulo ``2**64``, and for ``modulus_bits < 64`` words are reduced with a
bit mask after every sum.

Why overflow is impossible by construction
------------------------------------------
Decoding maps a word ``w`` to ``w`` if ``w < M/2`` and to ``w - M`` otherwise, so it returns
the true integer sum ``S`` whenever ``-M/2 <= S < M/2``. Every node's encoded value lies in
``[-T, clip + T]``, where ``T`` is the noise tail bound (``noise_tail_bound``: every draw
of every node lies in ``[-T, T]`` except with probability below ``2**-40``, and a node
whose draw falls outside refuses to send it, so an out-of-bound value is never encoded).
The sum over at most ``n`` nodes therefore satisfies ``|S| <= n (clip + T)``, and the round
parameters are refused up front unless ``n (clip + T) < M/2`` (:func:`check_no_overflow`).
Contributor counts and dominance indicators are 0 or 1, far inside the same bound.

A smaller word for the counts
-----------------------------
Contributor flags and dominance indicators need not share the sums' modulus. With
``SecAggConfig.count_bits = b`` they travel in their own segment of the masked vector,
reduced modulo ``2**b`` and sent in ``ceil(b/8)`` bytes a word (:func:`segments_to_b64`).
Masking stays sound: arithmetic is done modulo ``2**64`` and each segment is reduced at the
end, and ``Z_{2^64} -> Z_{2^b}`` is a ring homomorphism, so the pairwise masks still cancel and
each mask reduced modulo ``2**b`` is still uniform (the low bits of a uniform word). No
overflow: every node adds 0 or 1 per cell, so a count of at most ``n`` nodes lies in
``[0, n]``, and it decodes exactly if ``n < 2**(b - 1)`` (:func:`check_count_no_overflow`);
:func:`count_bits_for` picks the smallest whole-byte ``b`` that satisfies it (8 bits up to
127 nodes, 16 bits up to 32,767; the configuration caps ``n`` at 1,000).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from protocols._secagg_errors import MalformedMessageError, SecAggParameterError

__all__ = [
    "SECAGG_MAX_MODULUS_BITS",
    "SECAGG_MIN_COUNT_BITS",
    "SECAGG_MIN_MODULUS_BITS",
    "RingWords",
    "Segments",
    "add_words",
    "check_count_no_overflow",
    "check_no_overflow",
    "count_bits_for",
    "decode_segments",
    "decode_words",
    "encode_values",
    "reduce_segments",
    "segments_from_b64",
    "segments_to_b64",
    "smallest_modulus_bits",
    "subtract_words",
    "words_from_b64",
    "words_to_b64",
]

#: Largest supported modulus: NumPy's uint64 wraps at 2**64.
SECAGG_MAX_MODULUS_BITS = 64
#: Smallest supported modulus.
SECAGG_MIN_MODULUS_BITS = 16

#: Smallest word of the count segment (contributor flags, dominance indicators).
SECAGG_MIN_COUNT_BITS = 8

#: A vector of ring elements (uint64, each below the modulus).
RingWords = npt.NDArray[np.uint64]
#: A masked vector's layout: ``((length, bits), ...)``, one entry per segment, in order.
Segments = tuple[tuple[int, int], ...]


def _check_bits(modulus_bits: int) -> None:
    if not SECAGG_MIN_MODULUS_BITS <= modulus_bits <= SECAGG_MAX_MODULUS_BITS:
        raise SecAggParameterError(
            f"modulus_bits must be in [{SECAGG_MIN_MODULUS_BITS}, {SECAGG_MAX_MODULUS_BITS}], "
            f"got {modulus_bits}"
        )


def _reduce(words: RingWords, modulus_bits: int) -> RingWords:
    if modulus_bits < SECAGG_MAX_MODULUS_BITS:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


def check_no_overflow(*, nodes: int, clip: int, tail_bound: int, modulus_bits: int) -> None:
    """Raise :class:`SecAggParameterError` unless ``nodes * (clip + tail_bound) < M / 2``."""
    _check_bits(modulus_bits)
    if nodes < 1 or clip < 1 or tail_bound < 0:
        raise SecAggParameterError("nodes and clip must be >= 1 and tail_bound >= 0")
    worst = nodes * (clip + tail_bound)
    half = 1 << (modulus_bits - 1)
    if worst >= half:
        raise SecAggParameterError(
            f"{nodes} nodes x (clip {clip} + noise tail bound {tail_bound}) = {worst} could "
            f"overflow a {modulus_bits}-bit modulus (needs < 2**{modulus_bits - 1} = {half}); "
            "lower clip or the noise, or raise modulus_bits"
        )


def smallest_modulus_bits(*, nodes: int, clip: int, tail_bound: int) -> int:
    """The smallest whole-byte modulus (at least 16 bits) that :func:`check_no_overflow`
    accepts for these parameters; :class:`SecAggParameterError` if even 64 bits do not."""
    for bits in range(SECAGG_MIN_MODULUS_BITS, SECAGG_MAX_MODULUS_BITS + 1, 8):
        try:
            check_no_overflow(nodes=nodes, clip=clip, tail_bound=tail_bound, modulus_bits=bits)
        except SecAggParameterError:
            continue
        return bits
    check_no_overflow(nodes=nodes, clip=clip, tail_bound=tail_bound,
                      modulus_bits=SECAGG_MAX_MODULUS_BITS)
    raise AssertionError("unreachable")  # pragma: no cover


def check_count_no_overflow(*, nodes: int, count_bits: int) -> None:
    """Raise :class:`SecAggParameterError` unless a sum of ``nodes`` zeros and ones always
    decodes exactly modulo ``2**count_bits``: ``nodes < 2**(count_bits - 1)``."""
    if not SECAGG_MIN_COUNT_BITS <= count_bits <= SECAGG_MAX_MODULUS_BITS:
        raise SecAggParameterError(
            f"count_bits must be in [{SECAGG_MIN_COUNT_BITS}, {SECAGG_MAX_MODULUS_BITS}], "
            f"got {count_bits}"
        )
    if nodes < 1 or nodes >= 1 << (count_bits - 1):
        raise SecAggParameterError(
            f"a count of up to {nodes} nodes does not fit {count_bits}-bit words (needs "
            f"nodes < 2**{count_bits - 1})"
        )


def count_bits_for(nodes: int) -> int:
    """The smallest whole-byte ``count_bits`` with ``nodes < 2**(count_bits - 1)``."""
    for bits in range(SECAGG_MIN_COUNT_BITS, SECAGG_MAX_MODULUS_BITS + 1, 8):
        if nodes < 1 << (bits - 1):
            return bits
    raise SecAggParameterError(f"{nodes} nodes do not fit any count word")


def encode_values(values: Sequence[int], *, bound: int, modulus_bits: int) -> RingWords:
    """Map signed integers with ``|v| <= bound`` to ring words ``v mod 2**modulus_bits``."""
    _check_bits(modulus_bits)
    ints = [int(v) for v in values]
    for v in ints:
        if abs(v) > bound:
            raise SecAggParameterError(f"value {v} is outside the encodable range +-{bound}")
    if bound >= 1 << (modulus_bits - 1):
        raise SecAggParameterError(f"bound {bound} does not fit a {modulus_bits}-bit modulus")
    signed = np.array(ints, dtype=np.int64)
    return _reduce(signed.view(np.uint64).copy(), modulus_bits)


def decode_words(words: RingWords, *, modulus_bits: int) -> list[int]:
    """Map ring words back to signed integers: the top half of the ring is negative."""
    _check_bits(modulus_bits)
    modulus = 1 << modulus_bits
    half = modulus >> 1
    return [w - modulus if w >= half else w for w in (int(x) for x in words)]


def add_words(left: RingWords, right: RingWords, *, modulus_bits: int) -> RingWords:
    """``left + right`` modulo ``2**modulus_bits`` (a new array)."""
    return _reduce(left + right, modulus_bits)


def subtract_words(left: RingWords, right: RingWords, *, modulus_bits: int) -> RingWords:
    """``left - right`` modulo ``2**modulus_bits`` (a new array)."""
    return _reduce(left - right, modulus_bits)


def _word_bytes(modulus_bits: int) -> int:
    return (modulus_bits + 7) // 8


def _pack(words: RingWords, bits: int) -> bytes:
    raw = np.ascontiguousarray(words, dtype="<u8").view(np.uint8).reshape(-1, 8)
    return raw[:, : _word_bytes(bits)].tobytes()


def _unpack(raw: bytes, *, length: int, bits: int) -> RingWords:
    size = _word_bytes(bits)
    padded = np.zeros((length, 8), dtype=np.uint8)
    padded[:, :size] = np.frombuffer(raw, dtype=np.uint8).reshape(length, size)
    words = padded.reshape(-1).view("<u8").astype(np.uint64)
    if bits < SECAGG_MAX_MODULUS_BITS and bool((words >> np.uint64(bits)).any()):
        raise MalformedMessageError(f"a masked word is not below 2**{bits}")
    return words


def words_to_b64(words: RingWords, *, modulus_bits: int) -> str:
    """The wire form of a word vector: little-endian, ``ceil(bits/8)`` bytes a word, base64."""
    _check_bits(modulus_bits)
    return base64.b64encode(_pack(words, modulus_bits)).decode("ascii")


def words_from_b64(text: str, *, length: int, modulus_bits: int) -> RingWords:
    """Parse :func:`words_to_b64`'s output; raise :class:`MalformedMessageError` if it is not
    exactly ``length`` words below the modulus."""
    _check_bits(modulus_bits)
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise MalformedMessageError("masked words are not valid base64") from exc
    size = _word_bytes(modulus_bits)
    if len(raw) != length * size:
        raise MalformedMessageError(
            f"masked input has {len(raw)} bytes, expected {length} words of {size} bytes"
        )
    return _unpack(raw, length=length, bits=modulus_bits)


def _check_segments(segments: Segments) -> None:
    for length, bits in segments:
        if length < 0 or not SECAGG_MIN_COUNT_BITS <= bits <= SECAGG_MAX_MODULUS_BITS:
            raise SecAggParameterError(f"invalid segment ({length} words, {bits} bits)")


def reduce_segments(words: RingWords, segments: Segments) -> RingWords:
    """``words`` (arithmetic done modulo ``2**64``) with each segment reduced modulo its own
    ``2**bits`` (a new array). A ring homomorphism per segment: sums and masks commute."""
    _check_segments(segments)
    if len(words) != sum(length for length, _ in segments):
        raise SecAggParameterError("the segments do not cover the vector")
    out = np.array(words, dtype=np.uint64, copy=True)
    start = 0
    for length, bits in segments:
        if bits < SECAGG_MAX_MODULUS_BITS:
            out[start:start + length] &= np.uint64((1 << bits) - 1)
        start += length
    return out


def decode_segments(words: RingWords, segments: Segments) -> list[int]:
    """Reduce each segment to its modulus and map it to signed integers (top half negative)."""
    reduced = reduce_segments(words, segments)
    out: list[int] = []
    start = 0
    for length, bits in segments:
        modulus = 1 << bits
        half = modulus >> 1
        out += [w - modulus if w >= half else w
                for w in (int(x) for x in reduced[start:start + length])]
        start += length
    return out


def segments_to_b64(words: RingWords, segments: Segments) -> str:
    """The wire form of a segmented vector: each segment reduced to its modulus and packed in
    ``ceil(bits/8)`` little-endian bytes a word, the segments concatenated, base64. With a
    single segment it is exactly :func:`words_to_b64`."""
    reduced = reduce_segments(words, segments)
    parts, start = [], 0
    for length, bits in segments:
        parts.append(_pack(reduced[start:start + length], bits))
        start += length
    return base64.b64encode(b"".join(parts)).decode("ascii")


def segments_from_b64(text: str, segments: Segments) -> RingWords:
    """Parse :func:`segments_to_b64`; :class:`MalformedMessageError` unless it is exactly the
    segments' words, each below its segment's modulus."""
    _check_segments(segments)
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise MalformedMessageError("masked words are not valid base64") from exc
    expected = sum(length * _word_bytes(bits) for length, bits in segments)
    if len(raw) != expected:
        words = sum(length for length, _ in segments)
        raise MalformedMessageError(
            f"masked input has {len(raw)} bytes, expected {words} words in {expected} bytes"
        )
    chunks, offset = [], 0
    for length, bits in segments:
        size = length * _word_bytes(bits)
        chunks.append(_unpack(raw[offset:offset + size], length=length, bits=bits))
        offset += size
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)
