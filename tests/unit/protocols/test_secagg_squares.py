"""The encoding of a secure sum of squares: the sensitivity, the flooring, the overflow bound."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from protocols import (
    FIXED_POINT_SCALE,
    SQUARES_SCALES,
    AggregateQuery,
    SecAggParameterError,
    SecureAggregateQuery,
    encode_squares,
    plan_secagg_round,
    squares_encoding,
)


def squares(*, clip: float, bound: float, countries: tuple[str, ...] = ("COD", "ZMB"),
            **extra: Any) -> SecureAggregateQuery:
    query = AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": list(countries),
        "group_by": ["country"], "epsilon": 1.0,
        "bounds": {"record_clip": bound, "unit_sum_bound": bound}, "purpose": "unit test"})
    return SecureAggregateQuery(query=query, clip=clip, statistic="sum_of_squares", **extra)


def test_the_sensitivity_by_hand() -> None:
    # C = 50,000 t, B = 500 t, 2 cells: min(2 B C, d C^2) = min(5e7, 5e9) = 5e7 t^2;
    # at 10^6 units per t^2 that is 5e13, plus 1 per cell for the floor.
    enc = squares_encoding(squares(clip=50_000.0, bound=500.0), scale=10**6)
    assert enc.l1_sensitivity == 5 * 10**13 + 2
    assert enc.clip == 50_000**2 * 10**6
    # B >= C: one cell moves by at most C^2 = bound^2 (1 cell: min(2 B C, C^2) = C^2).
    enc = squares_encoding(squares(clip=100.0, bound=500.0, countries=("COD",)), scale=1)
    assert enc.l1_sensitivity == 100**2 + 1
    # ... and over two cells by min(2 B C, 2 C^2) = 2e4 (two cells of 250 t each can move
    # from 0 to the clip: 2 C^2).
    enc = squares_encoding(squares(clip=100.0, bound=500.0), scale=1)
    assert enc.l1_sensitivity == 2 * 100**2 + 2
    with pytest.raises(ValueError, match="scale"):
        squares_encoding(squares(clip=100.0, bound=500.0), scale=3)


def test_no_unit_change_exceeds_the_encoded_sensitivity() -> None:
    """Random neighbouring totals (one unit moves the cells by b_c, sum b_c <= B, clipped
    to [0, C]): the encoded squares never move by more than l1_sensitivity in L1, and a
    change near the clip comes close to it (the bound is not loose)."""
    rng = np.random.default_rng(3)
    for clip, bound, cells in ((50_000.0, 500.0, 2), (1_000.0, 3_000.0, 3),
                               (7_777.7, 12.5, 1)):
        sq = squares(clip=clip, bound=bound, countries=("COD", "ZMB", "AUS")[:cells])
        for scale in (10**6, 10**3, 1):
            enc = squares_encoding(sq, scale=scale)
            worst = 0
            clip_fp, bound_fp = round(clip * FIXED_POINT_SCALE), round(bound * FIXED_POINT_SCALE)
            for _ in range(400):
                base = rng.integers(0, int(clip_fp * 1.2), size=cells)
                split = rng.dirichlet(np.ones(cells)) * bound_fp * rng.uniform(0.5, 1.0)
                moved = base + np.floor(split).astype(np.int64)
                if rng.random() < 0.3:  # a unit at the top of the clip
                    base = np.full(cells, clip_fp) - np.floor(split).astype(np.int64)
                    moved = np.full(cells, clip_fp)
                a = encode_squares(list(base), secure_query=sq, scale=scale)
                b = encode_squares(list(moved), secure_query=sq, scale=scale)
                worst = max(worst, sum(abs(x - y) for x, y in zip(a, b, strict=True)))
            assert worst <= enc.l1_sensitivity
            assert worst > 0.4 * enc.l1_sensitivity, (clip, bound, scale, worst, enc)


def test_encoding_clips_squares_and_floors() -> None:
    sq = squares(clip=10.0, bound=5.0)
    # 3000 and 3001 fixed-point units are 3.000 and 3.001 t: 9.000 and 9.006001 t^2
    assert encode_squares([3000, 3001, -5, 20_000], secure_query=sq, scale=1000) == [
        9000, 9006, 0, 100_000]  # floor(9.006001 * 1000); negative -> 0; 20 t -> clip 10
    assert encode_squares([3001], secure_query=sq, scale=1) == [9]


def test_the_overflow_bound_decides_the_scale() -> None:
    # 4 nodes, clip 1e9 t: C^2 = 1e18 t^2 fits 2^63 / 4 = 2.3e18 only at 1 unit per t^2.
    sq = squares(clip=1e9, bound=1000.0)
    fits = []
    for scale in SQUARES_SCALES:
        enc = squares_encoding(sq, scale=scale)
        try:
            plan_secagg_round(node_ids=["a1", "b1", "c1", "d1"], cells=2, clip=enc.clip,
                              l1_sensitivity=enc.l1_sensitivity, scale=scale,
                              rho=sq.target_rho())
        except SecAggParameterError:
            continue
        fits.append(scale)
    assert fits == [1]
    # 10 nodes: 10 x 1e18 >= 2^63 at any scale: refused by the library's overflow check.
    enc = squares_encoding(sq, scale=1)
    with pytest.raises(SecAggParameterError, match="overflow"):
        plan_secagg_round(node_ids=[f"n{i}x" for i in range(10)], cells=2, clip=enc.clip,
                          l1_sensitivity=enc.l1_sensitivity, scale=1, rho=sq.target_rho())
