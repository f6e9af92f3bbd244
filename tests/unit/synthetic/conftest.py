"""Company-like records in the normalised form the synthesizers read."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from synthetic import PublicDomain

COUNTRIES = ["COD", "AUS", "CHL", "CHN", "IDN", "ZAF", "KOR", "USA"]
COMMODITIES = ["cobalt", "lithium", "nickel", "copper"]
FLOWS = ["production", "export", "import", "consumption", "stock_level", "price"]
PERIODS = [f"2024-{m:02d}" for m in range(1, 13)]


def make_records(n: int, *, seed: int, rows_per_site: int = 4,
                 price_quantity: bool = False) -> pl.DataFrame:
    """``n`` valid records: sites with a country, commodity and stage; lognormal quantities
    that depend on the country; prices for the price flow (with a quantity when
    ``price_quantity``); partners on trade flows only."""
    rng = np.random.default_rng(seed)
    n_sites = max(1, n // rows_per_site)
    site_country = rng.integers(0, len(COUNTRIES), n_sites)
    site_commodity = rng.integers(0, len(COMMODITIES), n_sites)
    site = rng.integers(0, n_sites, n)
    flow = np.array(FLOWS)[rng.choice(len(FLOWS), n, p=[0.35, 0.2, 0.1, 0.15, 0.1, 0.1])]
    trade = np.isin(flow, ["export", "import"])
    is_price = flow == "price"
    quantity = np.exp(rng.normal(2.0 + 0.5 * site_country[site], 1.0, n))
    price = np.exp(rng.normal(9.0 + 0.3 * site_commodity[site], 0.3, n))
    partner = np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), n)]
    contract = np.where(rng.random(n) < 0.5, "spot", "long_term")
    return pl.DataFrame({
        "period": np.array(PERIODS)[rng.integers(0, 12, n)].tolist(),
        "commodity": np.array(COMMODITIES)[site_commodity[site]].tolist(),
        "stage": np.where(site_country[site] == 3, "refining", "mining").tolist(),
        "flow": flow.tolist(),
        "country": np.array(COUNTRIES)[site_country[site]].tolist(),
        "partner_country": [p if t else None for p, t in zip(partner, trade, strict=True)],
        "contract_type": [c if p else None for c, p in zip(contract, is_price, strict=True)],
        "quantity_t": [None if (p and not price_quantity) else float(q)
                       for q, p in zip(quantity, is_price, strict=True)],
        "price_usd_t": [float(x) if p else None for x, p in zip(price, is_price, strict=True)],
        "contribution_unit": [f"site:{s}" for s in site],
    }, schema_overrides={"partner_country": pl.String, "contract_type": pl.String,
                         "quantity_t": pl.Float64, "price_usd_t": pl.Float64})


@pytest.fixture(scope="session")
def domain() -> PublicDomain:
    return PublicDomain(periods=PERIODS, quantity_max_t=1e5, price_max_usd_t=1e6,
                        commodities=COMMODITIES, countries=COUNTRIES,
                        partner_countries=COUNTRIES, stages=["mining", "refining"])


@pytest.fixture(scope="session")
def records() -> pl.DataFrame:
    return make_records(8000, seed=11)
