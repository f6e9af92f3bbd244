"""Each indicator's worked example, computed by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator import (
    ChokeRules,
    EU2017Parameters,
    anomaly_robust_z,
    choke_point_reasons,
    company_hhi,
    economic_importance,
    eol_rir,
    hhi,
    hhi_wgi_t,
    import_reliance,
    is_critical,
    long_term_share,
    price_volatility,
    reference_inputs,
    scale_wgi,
    secondary_share,
    shares,
    stock_cover_days,
    stocks_to_use,
    substitution_index,
    supply_risk,
    top_share,
    trade_parameter,
)

PARAMS = EU2017Parameters(ei_threshold=2.8, sr_threshold=1.0,
                          restriction_factors={"export_tax": 1.1, "export_quota": 1.1,
                                               "export_prohibition": 1.2},
                          agreement_factor=0.8, status="test")


def test_hhi_and_top3_by_country() -> None:
    # production 700, 150, 100, 50 -> shares 0.70, 0.15, 0.10, 0.05
    s = shares({"COD": 700.0, "RUS": 150.0, "AUS": 100.0, "CAN": 50.0})
    # HHI = 0.49 + 0.0225 + 0.01 + 0.0025 = 0.525 (5,250 points)
    assert math.isclose(hhi(s), 0.525)
    # top 3 = 0.70 + 0.15 + 0.10 = 0.95
    assert math.isclose(top_share(s, 3), 0.95)
    with pytest.raises(ValueError):
        hhi([0.5, 0.4])


def test_hhi_by_company_from_a_share_vector() -> None:
    # five companies 40/30/10/10/10 %: 0.16 + 0.09 + 3 * 0.01 = 0.28; top-3 = 0.8
    assert math.isclose(hhi([0.4, 0.3, 0.1, 0.1, 0.1]), 0.28)
    assert math.isclose(top_share([0.4, 0.3, 0.1, 0.1, 0.1]), 0.8)


def test_company_hhi_from_the_two_pooled_sums_worked_example() -> None:
    # companies 50, 30, 20: S1 = 100, S2 = 2500 + 900 + 400 = 3800
    # HHI = S2 / S1^2 = 3800 / 10000 = 0.38 (3,800 points), the same as from the shares:
    # 0.5^2 + 0.3^2 + 0.2^2 = 0.25 + 0.09 + 0.04 = 0.38
    exact = company_hhi(total=100.0, sum_of_squares=3800.0, companies=3)
    assert math.isclose(exact.value, 0.38) and math.isclose(exact.raw, 0.38)
    assert math.isclose(exact.value, hhi(shares({"a": 50.0, "b": 30.0, "c": 20.0})))
    assert not exact.clamped and exact.std == 0.0 and exact.ci95 == 0.0  # no noise, no error
    # noise can push S2 / S1^2 outside [1/n, 1]: clamped, and said so
    low = company_hhi(total=100.0, sum_of_squares=2000.0, companies=3)  # raw 0.2 < 1/3
    assert math.isclose(low.raw, 0.2) and math.isclose(low.value, 1 / 3) and low.clamped
    high = company_hhi(total=100.0, sum_of_squares=12_000.0, companies=3)  # raw 1.2
    assert high.value == 1.0 and high.clamped
    with pytest.raises(ValueError, match="not positive"):
        company_hhi(total=-1.0, sum_of_squares=3800.0, companies=3)
    # Why there is no company CR3 from sums: 45/30/20/5 and 50/20/15/15 have the same
    # S1 = 100 and S2 = 2025 + 900 + 400 + 25 = 2500 + 400 + 225 + 225 = 3350 (HHI 0.335),
    # but top-3 shares 0.95 and 0.85.
    first, second = [45.0, 30.0, 20.0, 5.0], [50.0, 20.0, 15.0, 15.0]
    assert sum(first) == sum(second) == 100 and sum(x * x for x in first) == sum(
        x * x for x in second) == 3350
    assert math.isclose(hhi([x / 100 for x in first]), hhi([x / 100 for x in second]))
    assert math.isclose(top_share([x / 100 for x in first]), 0.95)
    assert math.isclose(top_share([x / 100 for x in second]), 0.85)


def test_company_hhi_error_bar_matches_the_delta_method_and_covers_the_truth() -> None:
    # S1 = 100 +- 2, S2 = 3800 +- 150: the delta method gives
    # Var(HHI) = (sd2 / S1^2)^2 + (2 S2 sd1 / S1^3)^2 = 0.015^2 + 0.0152^2 -> std 0.02135
    bar = company_hhi(total=100.0, sum_of_squares=3800.0, companies=3, total_std=2.0,
                      sum_of_squares_std=150.0)
    assert bar.std is not None and bar.ci95 is not None
    assert bar.std == pytest.approx(math.hypot(0.015, 0.0152), rel=0.08)
    assert bar.ci95 == pytest.approx(1.96 * bar.std, rel=0.15)
    # Coverage: repeat the noisy release; the true 0.38 is within ci95 about 95% of the time.
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(300):
        noisy = company_hhi(total=100.0 + rng.normal(0, 2.0),
                            sum_of_squares=3800.0 + rng.normal(0, 150.0), companies=3,
                            total_std=2.0, sum_of_squares_std=150.0, draws=1000)
        assert noisy.ci95 is not None
        hits += abs(noisy.value - 0.38) <= noisy.ci95
    assert 0.9 < hits / 300 <= 1.0
    # A total drowned in noise has no error bar.
    assert company_hhi(total=1.0, sum_of_squares=1.0, companies=3, total_std=5.0).std is None


def test_import_reliance_raw_and_clamped() -> None:
    # P 100, I 300, E 50: (300 - 50) / (100 + 300 - 50) = 250 / 350 = 0.714285...
    ir = import_reliance(production=100.0, imports=300.0, exports=50.0)
    assert ir.raw is not None and math.isclose(ir.raw, 250 / 350)
    assert ir.clamped == ir.raw
    # net exporter: P 500, I 10, E 200 -> (10 - 200) / 310 = -0.6129 raw, 0 clamped
    ir = import_reliance(production=500.0, imports=10.0, exports=200.0)
    assert ir.raw is not None and math.isclose(ir.raw, -190 / 310) and ir.clamped == 0.0
    # apparent consumption <= 0: undefined
    assert import_reliance(production=0.0, imports=10.0, exports=10.0).raw is None


def test_wgi_scaling_and_trade_parameter() -> None:
    # WGI -1.5 -> (2.5 + 1.5) * 2 = 8.0; WGI 2.5 -> 0; WGI -3 clamps at 10
    assert scale_wgi(-1.5) == 8.0 and scale_wgi(2.5) == 0.0 and scale_wgi(-3.0) == 10.0
    # export prohibition: t = 1.2; with an EU agreement: 1.2 * 0.8 = 0.96; EU member: 0.8
    assert trade_parameter(restrictions=["export_prohibition"], parameters=PARAMS) == 1.2
    assert math.isclose(trade_parameter(restrictions=["export_prohibition", "export_tax"],
                                        eu_member_or_agreement=True, parameters=PARAMS), 0.96)
    assert trade_parameter(eu_member_or_agreement=True, parameters=PARAMS) == 0.8


def test_eu_2017_supply_risk_worked_example() -> None:
    # global supply: COD 60 %, CHN 40 %; scaled WGI COD 8.0, CHN 5.8; t COD 1.2, CHN 1
    # HHI_WGI,t(global) = 0.36 * 8.0 * 1.2 + 0.16 * 5.8 * 1 = 3.456 + 0.928 = 4.384
    g = hhi_wgi_t(share={"COD": 0.6, "CHN": 0.4}, wgi_scaled={"COD": 8.0, "CHN": 5.8},
                  t={"COD": 1.2, "CHN": 1.0})
    assert math.isclose(g, 4.384)
    # EU sourcing: FIN 50 % (WGI 1.4, t 0.8 as EU member), COD 50 % (8.0, 1.2)
    # = 0.25 * 1.4 * 0.8 + 0.25 * 8.0 * 1.2 = 0.28 + 2.4 = 2.68
    e = hhi_wgi_t(share={"FIN": 0.5, "COD": 0.5}, wgi_scaled={"FIN": 1.4, "COD": 8.0},
                  t={"FIN": 0.8, "COD": 1.2})
    assert math.isclose(e, 2.68)
    # IR 0.8, EOL-RIR 0.2, SI_SR 0.9:
    # SR = [4.384 * 0.4 + 2.68 * (1 - 0.4)] * 0.8 * 0.9 = (1.7536 + 1.608) * 0.72 = 2.420352
    sr = supply_risk(hhi_wgi_t_global=g, hhi_wgi_t_eu_sourcing=e, import_reliance=0.8,
                     eol_rir=0.2, si_sr=0.9)
    assert math.isclose(sr, 2.420352)
    with pytest.raises(ValueError):
        supply_risk(hhi_wgi_t_global=g, hhi_wgi_t_eu_sourcing=e, import_reliance=1.3,
                    eol_rir=0.2, si_sr=0.9)


def test_substitution_index_and_economic_importance_worked_example() -> None:
    # batteries 60 % of use: 30 % of it substitutable at SCP 0.9 -> 0.3*0.9 + 0.7*1 = 0.97
    # alloys 40 %: no substitute -> 1
    # SI = 0.6 * 0.97 + 0.4 * 1 = 0.982
    si = substitution_index([(0.6, [(0.3, 0.9)]), (0.4, [])])
    assert math.isclose(si, 0.982)
    # EI = (0.6 * 200 + 0.4 * 55) * 0.982 = (120 + 22) * 0.982 = 139.444; scaled by the
    # largest sector's value added 200: 10 * 139.444 / 200 = 6.9722
    ei = economic_importance(end_use_shares={"C29": 0.6, "C24": 0.4},
                             value_added={"C29": 200.0, "C24": 55.0}, si_ei=si, scale_by=200.0)
    assert math.isclose(ei, 6.9722)
    assert is_critical(economic_importance=ei, supply_risk=2.42, parameters=PARAMS)
    assert not is_critical(economic_importance=ei, supply_risk=0.99, parameters=PARAMS)
    assert not is_critical(economic_importance=2.79, supply_risk=5.0, parameters=PARAMS)


def test_shipped_parameters_and_reference_inputs_load() -> None:
    ref = reference_inputs()
    assert ref.parameters.ei_threshold == 2.8 and ref.parameters.sr_threshold == 1.0
    assert ref.illustrative  # the shipped WGI etc. are labelled illustrative
    assert ref.wgi_scaled["COD"] == scale_wgi(-1.5)
    # cobalt from COD: export prohibition (illustrative row), no agreement -> 1.2
    assert ref.t("cobalt", "COD") == 1.2
    assert ref.t("cobalt", "FIN") == 0.8  # EU member


def test_recycling_stock_price_and_contract_indicators() -> None:
    # EOL-RIR: 20 t old scrap, 180 t primary -> 20 / 200 = 0.1
    assert math.isclose(eol_rir(secondary_from_end_of_life=20.0, primary_input=180.0), 0.1)
    assert math.isclose(secondary_share(recycling_input=50.0, primary_production=150.0), 0.25)
    # stocks 30 t, use 365 t a year: 30/365 = 0.0822 stocks-to-use, 30 days cover
    assert math.isclose(stocks_to_use(stocks=30.0, use=365.0), 30 / 365)
    assert math.isclose(stock_cover_days(stocks=30.0, annual_consumption=365.0), 30.0)
    # prices 100, 110, 99: log returns ln 1.1 = 0.09531, ln 0.9 = -0.10536
    # mean -0.005025; sample std = sqrt(((0.100335)^2 + (0.100335)^2) / 1) = 0.141897
    r1, r2 = math.log(1.1), math.log(0.9)
    m = (r1 + r2) / 2
    expected = math.sqrt(((r1 - m) ** 2 + (r2 - m) ** 2) / 1)
    assert math.isclose(price_volatility([100.0, 110.0, 99.0]), expected)
    assert math.isclose(expected, 0.141897, rel_tol=1e-5)
    # 300 t long-term, 100 t spot -> 0.75
    assert long_term_share(long_term=300.0, spot=100.0) == 0.75


def test_choke_point_rules_give_their_reasons() -> None:
    rules = ChokeRules()
    reasons = choke_point_reasons(hhi_value=0.525, top3=0.95, import_reliance_value=0.9,
                                  cover_days=12.0, trend=0.05, rules=rules)
    assert reasons == ["concentration: HHI 0.53 >= 0.25",
                       "concentration: top-3 share 95% >= 75%",
                       "import reliance 90% >= 50%", "stock cover 12 days <= 30"]
    # concentration alone is one condition: not enough with min_conditions 2
    assert choke_point_reasons(hhi_value=0.6, top3=0.99, import_reliance_value=0.1,
                               cover_days=200.0, trend=0.0) == []
    one = ChokeRules(min_conditions=1)
    assert choke_point_reasons(hhi_value=None, top3=None, import_reliance_value=None,
                               cover_days=None, trend=-0.2, rules=one) == [
        "production trend -20% <= -10%"]


def test_robust_z_score() -> None:
    # history 100, 102, 98, 101, 99: median 100, |dev| 0,2,2,1,1 -> MAD 1
    # value 110: 0.6745 * 10 / 1 = 6.745
    z = anomaly_robust_z([100.0, 102.0, 98.0, 101.0, 99.0], 110.0)
    assert z is not None and math.isclose(z, 6.745)
    assert anomaly_robust_z([1.0, 2.0], 5.0) is None
