"""Consistency post-processing: non-negativity, exact sums and identity, error reduction,
suppression in hierarchies, and simulated error bars."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import (
    Balance,
    BalanceFigure,
    BalanceRequest,
    BalanceRow,
    CellStatus,
    Level,
    MeasuredTotal,
    Measurement,
    PooledCell,
    Tree,
    assemble_balance,
    publishable_totals,
    reconcile,
    reconcile_balance,
    simulate_errors,
)
from tests.unit.coordinator.test_balance import published, results, total_results


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


def _with_totals(cod: float, zmb: float, world: float, *, africa: float | None = None,
                 zmb_status: CellStatus = CellStatus.PUBLISHED):  # type: ignore[no-untyped-def]
    """COD and ZMB mining production (scale 1 each) and a measured world total (scale 1)."""
    request = BalanceRequest(commodity="cobalt", period="2024", totals="world+regions")
    zmb_cell = (published(zmb, [1.0]) if zmb_status is CellStatus.PUBLISHED
                else PooledCell(key=[], status=zmb_status))
    flows, stocks = results(request, {("COD", "mining", "production"): published(cod, [1.0]),
                                      ("ZMB", "mining", "production"): zmb_cell}, {})
    values = [{("mining", "production"): published(world, [1.0])}]
    if africa is not None:
        values.append({("mining", "production"): published(africa, [1.0])})
    return assemble_balance(request, flows, stocks, total_results(request, values))


def test_a_measured_world_total_is_combined_with_the_country_cells() -> None:
    # the hand example above on a balance: countries 10 and 20 (var 2 each), world measured
    # 36 (var 2): residual 6 split by variance, 4 to the countries' sum -> 12 and 22
    rb = reconcile_balance(_with_totals(10.0, 20.0, 36.0), draws=2000)
    cod, zmb, world = rb.row("COD", "mining"), rb.row("ZMB", "mining"), rb.row("World", "mining")
    africa = rb.row("Africa", "mining")
    assert cod is not None and zmb is not None and world is not None and africa is not None
    assert math.isclose(cod.production.value or 0, 12.0)
    assert math.isclose(zmb.production.value or 0, 22.0)
    assert math.isclose(world.production.value or 0, 34.0)  # countries sum to the world
    assert math.isclose(africa.production.value or 0, 34.0)  # ... and to their region
    assert world.production.measured and world.production.raw_value == 36.0
    assert not africa.production.measured and africa.production.raw_value == 30.0
    # world = (2 y_w + y_c + y_z) / 3 (WLS weights): variance (4*2 + 2 + 2) / 9 = 4/3,
    # against 4 for the sum of the countries alone and 2 for the world measurement alone
    assert world.production.std is not None
    assert abs(world.production.std - math.sqrt(4 / 3)) < 0.08
    alone = reconcile_balance(_with_totals(10.0, 20.0, 36.0).model_copy(update={"totals": []}),
                              draws=2000).row("World", "mining")
    assert alone is not None and alone.production.std is not None
    assert abs(alone.production.std - 2.0) < 0.12
    assert not alone.production.measured and alone.production.value == 30.0


def test_a_measured_region_and_world_are_all_combined_and_sums_hold() -> None:
    rb = reconcile_balance(_with_totals(10.0, 20.0, 36.0, africa=33.0), draws=200)
    values = {a: (rb.row(a, "mining").production.value or 0.0)  # type: ignore[union-attr]
              for a in ("COD", "ZMB", "Africa", "World")}
    # three measurements of the same sum: 30 (var 4), 36 (var 2), 33 (var 2) -> the total
    # moves to (30/4 + 36/2 + 33/2) / (1/4 + 1/2 + 1/2) = 33.6, split equally (equal vars)
    assert math.isclose(values["World"], 33.6) and math.isclose(values["Africa"], 33.6)
    assert math.isclose(values["COD"] + values["ZMB"], values["World"])
    assert math.isclose(values["COD"], 11.8) and math.isclose(values["ZMB"], 21.8)


def test_a_total_with_a_suppressed_member_is_not_used() -> None:
    # world - COD would reveal ZMB's suppressed figure: the measurement is dropped and the
    # world row is the partial sum of published members, as without totals
    rb = reconcile_balance(_with_totals(10.0, 0.0, 36.0, zmb_status=CellStatus.SUPPRESSED),
                           draws=100)
    world = rb.row("World", "mining")
    assert world is not None and world.production.missing_members == ["ZMB"]
    assert not world.production.measured and world.production.value == 10.0
    assert world.production.raw_value == 10.0


def _production_balance(countries: dict[str, float], scales: list[float], world: float,
                        world_scales: list[float]) -> Balance:
    """A balance of mining production only, with a measured world total (built directly)."""
    empty = BalanceFigure(status=CellStatus.NOT_COVERED)

    def figure(value: float, b: list[float]) -> BalanceFigure:
        return BalanceFigure(status=CellStatus.PUBLISHED, value=value, noise_scales=b)

    rows = [BalanceRow(country=c, stage="mining", production=figure(v, scales),
                       **{n: empty for n in ("imports", "exports", "consumption",
                                             "recycling_input", "waste", "opening_stock",
                                             "closing_stock", "stock_change",
                                             "apparent_consumption")})
            for c, v in countries.items()]
    total = MeasuredTotal(level="world", area="World", stage="mining", figure="production",
                          value=figure(world, world_scales), query_id="w")
    return Balance(commodity="cobalt", period="2024", rows=rows, query_ids=[], nodes=[],
                   epsilon_by_node={}, unit_sum_bound=1.0, stock_unit_bound=1.0,
                   totals=[total])


def test_measured_totals_reduce_the_error_of_every_level_on_seeded_balances() -> None:
    """Raw world measurement, sum of raw countries, and post-processed world vs the truth."""
    rng = np.random.default_rng(11)
    truth = {"COD": 3000.0, "ZMB": 800.0, "ZAF": 400.0, "AUS": 1200.0}
    b_country, b_world = 100.0, 200.0  # four contributors' noise terms in every cell
    errs: dict[str, list[float]] = {"raw_world": [], "sum": [], "post": [], "raw_cod": [],
                                    "post_cod": []}
    for _ in range(300):
        noisy = {c: v + rng.laplace(0, b_country, size=4).sum() for c, v in truth.items()}
        world = sum(truth.values()) + rng.laplace(0, b_world, size=4).sum()
        balance = _production_balance(noisy, [b_country] * 4, world, [b_world] * 4)
        rb = reconcile_balance(balance, draws=10)
        post_world, post_cod = rb.row("World", "mining"), rb.row("COD", "mining")
        assert post_world is not None and post_cod is not None
        assert post_world.production.measured
        errs["raw_world"].append(world - sum(truth.values()))
        errs["sum"].append(sum(noisy.values()) - sum(truth.values()))
        errs["post"].append((post_world.production.value or 0.0) - sum(truth.values()))
        errs["raw_cod"].append(noisy["COD"] - truth["COD"])
        errs["post_cod"].append((post_cod.production.value or 0.0) - truth["COD"])
    rmse = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errs.items()}
    # theory: sum of countries sd 400, world measurement 566, combined 327 (ratio 0.82)
    assert rmse["post"] < 0.9 * min(rmse["raw_world"], rmse["sum"])
    assert rmse["post_cod"] < rmse["raw_cod"]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-3000, 3000), min_size=2, max_size=8),
       st.lists(st.floats(0.5, 50.0), min_size=8, max_size=8))
def test_a_kept_sum_is_the_unconstrained_sum_and_the_closest_non_negative_split(
        values: list[float], scales: list[float]) -> None:
    n = len(values)
    ms = [Measurement((i,), v, (scales[i],)) for i, v in enumerate(values)]
    x = reconcile(n_leaves=n, measurements=ms, keep_sums=[list(range(n))])
    assert np.all(x >= 0.0)
    assert math.isclose(x.sum(), max(sum(values), 0.0), rel_tol=1e-9, abs_tol=1e-6)
    # optimality (KKT): positive leaves moved down by mu * variance, zero leaves below that
    u, v = np.array(values), np.array([2 * scales[i] ** 2 for i in range(n)])
    if sum(values) > 0 and min(values) < 0:
        positive = x > 0
        mu = (u[positive] - x[positive]) / v[positive]
        assert np.allclose(mu, mu[0], rtol=1e-6, atol=1e-9) and mu[0] >= -1e-12
        assert np.all(u[~positive] / v[~positive] <= mu[0] * (1 + 1e-9) + 1e-9)
    elif min(values) >= 0:
        assert np.allclose(x, u)  # nothing to clip: the measurements themselves


def test_a_kept_sum_with_a_measured_total_keeps_the_weighted_least_squares_total() -> None:
    # leaves -30, 50, 40 and their measured total 70, all of variance 2: the unconstrained
    # WLS total is (60 + 70 * 3) / 4 = 67.5 (the leaves' sum has variance 6, the total 2)
    ms = [Measurement((0,), -30.0, (1.0,)), Measurement((1,), 50.0, (1.0,)),
          Measurement((2,), 40.0, (1.0,)), Measurement((0, 1, 2), 70.0, (1.0,))]
    kept = reconcile(n_leaves=3, measurements=ms, keep_sums=[[0, 1, 2]])
    clipped = reconcile(n_leaves=3, measurements=ms)
    assert np.all(kept >= 0) and kept[0] == 0.0
    assert math.isclose(kept.sum(), 67.5, rel_tol=1e-6)
    assert clipped.sum() > 67.5 + 1.0  # plain clipping raises the total


def test_keeping_the_world_sum_removes_the_upward_bias_of_clipped_cells() -> None:
    rng = np.random.default_rng(5)
    truth = np.where(np.arange(20) % 2 == 0, 0.0, 500.0)  # half the countries inactive
    errs: dict[str, list[float]] = {"raw": [], "clipped": [], "kept": []}
    for _ in range(300):
        y = truth + rng.laplace(0.0, 300.0, size=20)
        ms = [Measurement((i,), float(v), (300.0,)) for i, v in enumerate(y)]
        world = truth.sum()
        errs["raw"].append(y.sum() - world)
        errs["clipped"].append(reconcile(n_leaves=20, measurements=ms).sum() - world)
        errs["kept"].append(reconcile(n_leaves=20, measurements=ms,
                                      keep_sums=[list(range(20))]).sum() - world)
    rmse = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errs.items()}
    assert rmse["clipped"] > 1.08 * rmse["raw"]  # 10 clipped zero cells add up (1.12x)
    assert rmse["kept"] <= rmse["raw"] + 1e-9  # max(0, raw sum) is never further
    assert abs(np.mean(errs["kept"])) < 0.2 * abs(np.mean(errs["clipped"]))


def _mining_production(values: dict[str, float]) -> Balance:
    request = BalanceRequest(commodity="cobalt", period="2024")
    flows, stocks = results(request, {(c, "mining", "production"): published(v, [10.0] * 3)
                                      for c, v in values.items()}, {})
    return assemble_balance(request, flows, stocks)


def test_reconcile_balance_keeps_the_world_sum_of_the_country_cells_by_default() -> None:
    balance = _mining_production({"COD": 100.0, "ZMB": -60.0, "AUS": 50.0})
    rb = reconcile_balance(balance, draws=200)
    value = {a: rb.row(a, "mining").production.value  # type: ignore[union-attr]
             for a in ("COD", "ZMB", "AUS", "Africa", "Oceania", "World")}
    # world = raw sum 90; equal variances: the two positive cells move down by 30 each
    assert value["World"] is not None and math.isclose(value["World"], 90.0)
    assert value["ZMB"] == 0.0 and math.isclose(value["COD"] or 0, 70.0)
    assert math.isclose(value["AUS"] or 0, 20.0)
    assert math.isclose(value["Africa"] or 0, 70.0) and math.isclose(value["Oceania"] or 0, 20.0)
    plain = reconcile_balance(balance, draws=2, keep_world_sums=False).row("World", "mining")
    assert plain is not None and plain.production.value == 150.0  # 100 + 0 + 50
    # the error bar of the kept world sum is that of the raw sum (three cells of 3 terms)
    world = rb.row("World", "mining")
    assert world is not None and world.production.std is not None
    assert abs(world.production.std - math.sqrt(9 * 2 * 10.0**2)) < 0.15 * math.sqrt(1800)
