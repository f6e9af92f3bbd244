"""Consistency post-processing: non-negativity, exact sums and identity, error reduction,
suppression in hierarchies, and simulated error bars."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import (
    BalanceRequest,
    CellStatus,
    Level,
    Measurement,
    PooledCell,
    Tree,
    assemble_balance,
    publishable_totals,
    reconcile,
    reconcile_balance,
    simulate_errors,
)
from tests.unit.coordinator.test_balance import published, results


def test_a_negative_lone_cell_is_clipped_and_a_positive_one_kept() -> None:
    ms = [Measurement((0,), -40.0, (10.0,)), Measurement((1,), 25.0, (10.0,))]
    assert reconcile(n_leaves=2, measurements=ms).tolist() == [0.0, 25.0]


def test_a_measured_parent_is_combined_by_inverse_variance_weights() -> None:
    # leaves a, b measured as 10 and 20 (var 2*1^2 = 2 each), parent a+b measured as 36 (var 2)
    # WLS: residual r = 36 - 30 = 6 is split by variance: parent var 2, children sum var 4,
    # so the total moves 6 * 4 / (4 + 2) = 4 up: a = 12, b = 22, parent 34.
    ms = [Measurement((0,), 10.0, (1.0,)), Measurement((1,), 20.0, (1.0,)),
          Measurement((0, 1), 36.0, (1.0,))]
    x = reconcile(n_leaves=2, measurements=ms)
    assert np.allclose(x, [12.0, 22.0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-500, 5000), min_size=4, max_size=4),
       st.lists(st.floats(-500, 9000), min_size=3, max_size=3))
def test_post_processing_is_non_negative_and_sums_hold_exactly(
        leaves: list[float], parents: list[float]) -> None:
    # world = r1 + r2; r1 = c0 + c1; r2 = c2 + c3; every level measured
    ms = [Measurement((i,), v, (100.0,)) for i, v in enumerate(leaves)]
    ms += [Measurement((0, 1), parents[0], (100.0,)), Measurement((2, 3), parents[1], (100.0,)),
           Measurement((0, 1, 2, 3), parents[2], (100.0,))]
    x = reconcile(n_leaves=4, measurements=ms)
    assert np.all(x >= 0.0)
    r1, r2, world = x[0] + x[1], x[2] + x[3], x.sum()
    assert math.isclose(r1 + r2, world, rel_tol=0, abs_tol=1e-9)
    # it is the optimum: no single feasible leaf move lowers the weighted squared error
    def loss(v: np.ndarray) -> float:
        return float(sum((v[list(m.leaves)].sum() - m.value) ** 2 for m in ms))
    for i in range(4):
        for step in (-1e-3, 1e-3):
            moved = x.copy()
            moved[i] = max(moved[i] + step, 0.0)
            assert loss(moved) >= loss(x) - 1e-6


def test_post_processing_reduces_the_error_on_a_seeded_hierarchy() -> None:
    rng = np.random.default_rng(7)
    truth = rng.lognormal(7.0, 1.0, size=12)
    truth[::3] = 0.0
    groups = [(i,) for i in range(12)] + [tuple(range(k, k + 4)) for k in (0, 4, 8)]
    groups.append(tuple(range(12)))
    raw_err, post_err = [], []
    for _ in range(200):
        t = np.array([truth[list(g)].sum() for g in groups])
        y = t + rng.laplace(0.0, 300.0, size=len(groups))
        x = reconcile(n_leaves=12,
                      measurements=[Measurement(g, float(v), (300.0,)) for g, v in
                                    zip(groups, y, strict=True)])
        post = np.array([x[list(g)].sum() for g in groups])
        raw_err.append(np.mean((y - t) ** 2))
        post_err.append(np.mean((post - t) ** 2))
    assert np.sqrt(np.mean(post_err)) < 0.8 * np.sqrt(np.mean(raw_err))


def test_simulated_error_bars_match_the_laplace_distribution_for_a_large_cell() -> None:
    ms = [Measurement((0,), 1e6, (100.0,))]
    bars = simulate_errors(n_leaves=1, measurements=ms, estimate=np.array([1e6]),
                           outputs=np.eye(1), draws=4000)
    # far from zero nothing is clipped: std sqrt(2)*100, 95% half-width 100*ln(20) = 299.6
    assert abs(bars.std[0] - math.sqrt(2) * 100) < 8
    assert abs(bars.ci95[0] - 100 * math.log(20)) < 20


def test_residual_rule_suppresses_a_parent_that_would_reveal_one_suppressed_child() -> None:
    tree = Tree(root="World", children={"World": ["A", "B"], "A": ["a1", "a2", "a3"],
                                        "B": ["b1", "b2"]})
    # one suppressed child in A (companies x, y): A - a2 - a3 would reveal it -> A suppressed
    # B has none suppressed -> published. World's residual is then {a1}: still < 3 -> suppressed
    flags = publishable_totals(tree=tree, suppressed_leaves={"a1"},
                               contributors={"a1": frozenset({"x", "y"})})
    assert flags == {"A": False, "B": True, "World": False}
    # two suppressed children in different regions with 3 companies between them: regions
    # fail alone, world's residual {a1, b1} has 3 companies -> world published
    flags = publishable_totals(tree=tree, suppressed_leaves={"a1", "b1"},
                               contributors={"a1": frozenset({"x", "y"}),
                                             "b1": frozenset({"z"})})
    assert flags == {"A": False, "B": False, "World": True}
    # same two, but one company in both: union 2 < 3 -> world suppressed too
    flags = publishable_totals(tree=tree, suppressed_leaves={"a1", "b1"},
                               contributors={"a1": frozenset({"x", "y"}),
                                             "b1": frozenset({"x"})})
    assert flags["World"] is False


def _balance():  # type: ignore[no-untyped-def]
    request = BalanceRequest(commodity="cobalt", period="2024")
    flows, stocks = results(request, {
        ("COD", "mining", "production"): published(1000.0, [10.0] * 3),
        ("COD", "mining", "import"): published(-15.0, [10.0] * 3),
        ("COD", "mining", "export"): published(800.0, [10.0] * 3),
        ("ZMB", "mining", "production"): published(300.0, [10.0] * 3),
        ("ZMB", "mining", "export"): PooledCell(key=[], status=CellStatus.SUPPRESSED),
        ("DEU", "refining", "import"): published(200.0, [10.0] * 3),
    }, {
        ("COD", "mining", "2023"): published(100.0, [5.0] * 3),
        ("COD", "mining", "2024"): published(130.0, [5.0] * 3),
    })
    return assemble_balance(request, flows, stocks)


def test_identity_holds_exactly_after_post_processing_on_every_published_row() -> None:
    rb = reconcile_balance(_balance(), draws=200)
    checked = 0
    for row in rb.rows:
        ac = row.apparent_consumption
        if ac.status is not CellStatus.PUBLISHED:
            continue
        terms = {n: (row.figure(n).value or 0.0) for n in
                 ("production", "imports", "exports", "opening_stock", "closing_stock")}
        expected = (terms["production"] + terms["imports"] - terms["exports"]
                    - (terms["closing_stock"] - terms["opening_stock"]))
        assert ac.value is not None and math.isclose(ac.value, expected, abs_tol=1e-9)
        checked += 1
    assert checked >= 3
    cod = rb.row("COD", "mining")
    assert cod is not None and cod.imports.value == 0.0 and cod.imports.raw_value == -15.0
    # 1000 + 0 - 800 - (130 - 100) = 170
    assert cod.apparent_consumption.value is not None
    assert math.isclose(cod.apparent_consumption.value, 170.0)
    assert all((row.figure(n).value or 0.0) >= 0 for row in rb.rows
               for n in ("production", "imports", "exports", "closing_stock"))


def test_suppressed_cells_stay_suppressed_and_totals_are_partial() -> None:
    rb = reconcile_balance(_balance(), draws=100)
    zmb = rb.row("ZMB", "mining")
    assert zmb is not None and zmb.exports.status is CellStatus.SUPPRESSED
    assert zmb.exports.value is None and zmb.apparent_consumption.value is None
    world = rb.row("World", "mining")
    assert world is not None and world.level is Level.WORLD
    # world exports: only COD's published 800 is in it, and it says ZMB is missing
    assert world.exports.missing_members == ["ZMB"]
    assert world.exports.value is not None and math.isclose(world.exports.value, 800.0)
    assert world.apparent_consumption.status is CellStatus.SUPPRESSED
    # countries sum to regions and world exactly
    africa = rb.row("Africa", "mining")
    assert africa is not None and africa.production.value is not None
    assert world.production.value is not None
    assert math.isclose(africa.production.value, 1300.0)
    assert math.isclose(world.production.value, 1300.0)
    # EU27 is built from DEU alone
    eu = rb.row("EU27", "refining")
    assert eu is not None and eu.imports.value is not None
    assert math.isclose(eu.imports.value, 200.0)
    assert eu.imports.std is not None and eu.imports.std > 0
