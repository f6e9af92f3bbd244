"""Pooling: only contributors are added, small cells suppressed, error bars from the noise."""

from __future__ import annotations

import math

import numpy as np

from coordinator import CellStatus, pool_answers, sum_error_bar
from tests.unit.coordinator.conftest import answer, coverage, query


def test_cells_pool_the_contributors_and_suppress_below_three_companies() -> None:
    q = query()  # keys: (COD, production), (COD, export), (ZMB, production), (ZMB, export)
    answers = [
        answer(q, "a", [100.0, 10.0, 7.0, 1.0], coverage("COD", "ZMB")),
        answer(q, "b", [200.0, 20.0, 0.0, 0.0], coverage("COD")),
        answer(q, "c", [300.0, 30.0, 0.0, 0.0], coverage("COD", flows=("production",))),
        answer(q, "d", [-5.0, 4.0, 9.0, 9.0], []),  # declares nothing: never added
    ]
    cells = pool_answers(q, answers)
    assert [c.status for c in cells] == [CellStatus.PUBLISHED, CellStatus.SUPPRESSED,
                                         CellStatus.SUPPRESSED, CellStatus.SUPPRESSED]
    assert cells[0].value == 600.0
    assert [c.value for c in cells[1:]] == [None, None, None]
    assert cells[0].noise_scales == [1000.0, 1000.0, 1000.0]


def test_cells_no_company_covers_are_not_covered_rather_than_suppressed() -> None:
    q = query()
    cells = pool_answers(q, [answer(q, "a", [1.0, 2.0, 3.0, 4.0], coverage("COD"))])
    assert [c.status for c in cells] == [CellStatus.SUPPRESSED, CellStatus.SUPPRESSED,
                                         CellStatus.NOT_COVERED, CellStatus.NOT_COVERED]


def test_a_higher_minimum_of_contributors_is_honoured() -> None:
    q = query(min_contributors=4)
    answers = [answer(q, n, [1.0] * 4, coverage("COD")) for n in "abc"]
    assert pool_answers(q, answers)[0].status is CellStatus.SUPPRESSED


def test_error_bar_of_one_laplace_term_is_exact() -> None:
    std, ci95 = sum_error_bar([1000.0])
    assert std == math.sqrt(2) * 1000.0
    assert math.isclose(ci95, 1000.0 * math.log(20))


def test_error_bar_of_a_pooled_sum_covers_95_percent_of_its_noise() -> None:
    scales = [1000.0, 1000.0, 500.0]
    std, ci95 = sum_error_bar(scales)
    assert math.isclose(std, math.sqrt(2 * (1000**2 + 1000**2 + 500**2)))
    rng = np.random.default_rng(1)
    noise = sum(rng.laplace(0, b, 100_000) for b in scales)
    coverage_rate = float(np.mean(np.abs(noise) <= ci95))
    assert abs(coverage_rate - 0.95) < 0.005
    assert math.isclose(float(np.std(noise)), std, rel_tol=0.02)


def test_pooled_mean_divides_pooled_sums_by_pooled_counts() -> None:
    q = query(kind="mean", flows=["production"], countries=["COD"], group_by=["country"],
              bounds={"record_clip": 1000, "unit_sum_bound": 1000, "unit_record_bound": 2})
    answers = []
    for node_id, (s, n) in zip("abc", [(100.0, 2.0), (200.0, 3.0), (300.0, 5.0)], strict=True):
        a = answer(q, node_id, [s], coverage("COD"))
        a = a.model_copy(update={"counts": [n], "count_scale": 4.0})
        answers.append(a)
    cell = pool_answers(q, answers)[0]
    assert cell.status is CellStatus.PUBLISHED
    assert cell.value == 60.0  # 600 / 10
    assert cell.std is not None and cell.std > 0
