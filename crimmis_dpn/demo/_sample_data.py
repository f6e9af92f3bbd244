"""Sample data for the demo: the files of ten fictitious companies, each with its mapping.

Every company writes its records as its own systems would export them: CSV (comma, tab or
semicolon; UTF-8, UTF-8 with BOM, cp1252 or latin-1), XLSX or Parquet; its own column names
and codes ("SHIP-OUT", "Expédition", "261"); quantities in kg, t or lb, of contained element
or gross weight with a grade. Next to each file is the mapping (TOML, see docs/ingest.md)
that maps it onto :class:`protocols.ReportingRecord`, and :class:`SampleCompany` carries the
company's public coverage declaration.

The figures are of the order of public ones (:func:`reference_figures`: USGS Mineral
Commodity Summaries 2024 and the reports cited in ``reference_figures.toml``). The companies
are fictitious and together cover a share of each country's output, with sites sized like
real ones (1,000-8,000 t of cobalt or 2,000-12,000 t of lithium a year), so that no site or
contract exceeds the balance's default contribution bound in a year.

Each company reports monthly for the sample year and the year before: production, shipments
(with partner country and contract), closing stocks per site, consumption, recycling, and a
few prices. Three or more companies declare cobalt mining in COD, lithium mining in AUS and
refining of both in CHN, so those balance cells are published; Indonesia, Chile, Argentina
(two companies), the battery maker in KOR and the recycler in USA stay suppressed.
See docs/sample-data.md.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import polars as pl

from protocols import MASS_UNITS, PRICE_UNITS, CoverageEntry

__all__ = ["ReferenceFigure", "SampleCompany", "reference_figures", "write_sample_data"]


@dataclass(frozen=True)
class SampleCompany:
    """One fictitious company: its export file, the mapping of that file and its coverage."""

    node_id: str  # lower-case, [a-z0-9-]
    display_name: str
    kind: str  # "mine" | "refiner" | "battery_maker" | "recycler"
    data_file: Path
    mapping_file: Path
    coverage: tuple[CoverageEntry, ...]  # what the company declares (covers all its records)


@dataclass(frozen=True)
class ReferenceFigure:
    """A public order-of-magnitude figure (tonnes of contained element) and its source.

    ``pool_share`` is the range of the figure that the sample companies cover together, or
    ``None`` for a figure given as context only.
    """

    commodity: str
    country: str
    stage: str
    flow: str
    year: int
    tonnes: float
    source: str
    pool_share: tuple[float, float] | None


def reference_figures() -> list[ReferenceFigure]:
    """The figures of ``reference_figures.toml`` (shipped with this package)."""
    text = files("crimmis_dpn.demo").joinpath("reference_figures.toml").read_text("utf-8")
    figures = []
    for entry in tomllib.loads(text)["figure"]:
        share = entry.pop("pool_share", None)
        figures.append(ReferenceFigure(**entry, pool_share=None if share is None else
                                       (float(share[0]), float(share[1]))))
    return figures


# --------------------------------------------------------------------------- the companies

#: Mass fraction of the element in each product (low, high): what a gross quantity's grade is.
_GRADES: dict[str, tuple[float, float]] = {
    "co_hydroxide": (0.30, 0.36),  # cobalt hydroxide intermediate, Co(OH)2
    "mhp": (0.030, 0.040),  # mixed (nickel-cobalt) hydroxide precipitate, cobalt content
    "co_sulphate": (0.2096, 0.2096),  # CoSO4·7H2O
    "co_metal": (0.998, 0.998),  # cathode / briquettes
    "spodumene": (0.0255, 0.0288),  # SC6 concentrate, 5.5-6.2 % Li2O
    "li_carbonate": (0.1878, 0.1878),  # Li2CO3
    "li_hydroxide": (0.1654, 0.1654),  # LiOH·H2O
    "black_mass": (0.05, 0.08),  # shredded cells; lithium rows use 0.03-0.04 (below)
    "residue": (0.002, 0.006),  # slag and filter cake of the recycler
}
#: What a refinery buys from each origin.
_FEED = {
    ("cobalt", "COD"): "co_hydroxide",
    ("cobalt", "IDN"): "mhp",
    ("lithium", "AUS"): "spodumene",
    ("lithium", "CHL"): "li_carbonate",
    ("lithium", "ARG"): "li_carbonate",
}
_STAGE = {"mine": "mining", "refinery": "refining", "plant": "manufacturing"}
_FLOW_ORDER = ("import", "recycling_input", "production", "consumption", "waste", "export",
               "stock_level", "price")


@dataclass(frozen=True)
class _Site:
    """A site and what it does each month (tonnes of contained element a year)."""

    site_id: str
    role: str  # "mine" | "refinery" | "plant" (battery cells) | "recycling"
    commodity: str
    country: str
    tonnes: float  # a year in the sample year: output (mine, refinery, recycling: its feed)
    product: str  # output product (for a plant: what it consumes)
    sources: dict[str, float] = field(default_factory=dict)  # origin -> share of purchases
    sales: dict[str, float] = field(default_factory=dict)  # destination -> share exported


@dataclass(frozen=True)
class _Price:
    """Quarterly prices (USD per tonne of the product quoted) in the year before and the year."""

    commodity: str
    stage: str
    country: str
    product: str
    contract_type: str
    usd_t: tuple[float, float]  # (year before, sample year)


@dataclass(frozen=True)
class _Format:
    """How a company's file looks; the mapping is derived from it."""

    file_name: str  # "{year}" is replaced; the extension says csv, xlsx or parquet
    columns: dict[str, str]  # standard field -> the company's column, in file order
    constants: dict[str, str | float]
    codes: dict[str, dict[str, str]]  # field -> {standard code or product: company's code}
    unit: str = "t"  # unit of the quantity column: kg, t or lb
    basis: str = "contained"  # contained | gross | mixed (imports gross, the rest contained)
    fixed_grade: float | None = None  # gross at this grade whatever the product (LCE)
    price_unit: str = "USD/t"
    lower_case_countries: bool = False
    delimiter: str = ","
    encoding: str = "utf-8"
    sheet: str | None = None
    id_format: str = "{n:06d}"
    extra: dict[str, str] = field(default_factory=dict)  # unmapped columns, constant text


@dataclass(frozen=True)
class _Company:
    node_id: str
    display_name: str
    kind: str
    fmt: _Format
    sites: tuple[_Site, ...]
    prices: tuple[_Price, ...]
    coverage: tuple[CoverageEntry, ...]


def _cov(commodity: str, stage: str, flows: str, countries: str) -> CoverageEntry:
    return CoverageEntry.model_validate({"commodity": commodity, "stages": [stage],
                                         "flows": flows.split(), "countries": countries.split()})


def _mines(commodity: str, country: str, product: str, sales: dict[str, float],
           **tonnes: float) -> tuple[_Site, ...]:
    return tuple(_Site(site.replace("_", "-"), "mine", commodity, country, t, product,
                       sales=sales) for site, t in tonnes.items())


_MINING = "production export stock_level"
_REFINING = "import production export stock_level"
_PLANT = "import consumption stock_level"

_COMPANIES: tuple[_Company, ...] = (
    _Company(
        "katanga-cobalt", "Katanga Cobalt Mining SA (fictitious)", "mine",
        _Format(
            "KCM_mouvements_{year}.csv",
            {"record_id": "Réf", "period": "Mois", "commodity": "Produit", "stage": "Étape",
             "flow": "Mouvement", "country": "Pays", "partner_country": "Pays partenaire",
             "quantity": "Quantité (kg Co)", "site_id": "Site", "contract_id": "Contrat",
             "price": "Prix (USD/t)", "contract_type": "Type de prix"},
            {"unit": "kg", "basis": "contained", "price_unit": "USD/t"},
            {"commodity": {"co_hydroxide": "Hydroxyde de cobalt", "co_metal": "Cobalt métal"},
             "stage": {"mining": "Mine", "refining": "Raffinerie"},
             "flow": {"production": "Production", "export": "Expédition",
                      "import": "Réception", "stock_level": "Stock fin de mois",
                      "price": "Prix"},
             "contract_type": {"spot": "Spot", "long_term": "Long terme"}},
            unit="kg", delimiter=";", encoding="cp1252", id_format="KC{n:06d}",
            extra={"Entité": "KCM Lubumbashi"},
        ),
        (*_mines("cobalt", "COD", "co_hydroxide", {"CHN": 0.85, "FIN": 0.15},
                 KC_COD_01=7200, KC_COD_02=6400, KC_COD_03=5600, KC_COD_04=4800,
                 KC_COD_05=3600, KC_COD_06=2400),
         _Site("KC-CHN-R1", "refinery", "cobalt", "CHN", 7000, "co_metal",
               {"COD": 1.0}, {"KOR": 0.15, "JPN": 0.10}),
         _Site("KC-CHN-R2", "refinery", "cobalt", "CHN", 5000, "co_metal",
               {"COD": 1.0}, {"KOR": 0.15, "JPN": 0.10})),
        (_Price("cobalt", "mining", "COD", "co_hydroxide", "long_term", (17_000, 13_500)),
         _Price("cobalt", "refining", "CHN", "co_metal", "spot", (33_000, 27_000))),
        (_cov("cobalt", "mining", f"{_MINING} price", "COD"),
         _cov("cobalt", "refining", f"{_REFINING} price", "CHN")),
    ),
    _Company(
        "lualaba-minerals", "Lualaba Minerals Ltd (fictitious)", "mine",
        _Format(
            "LM_monthly_report_{year}.xlsx",
            {"record_id": "Entry No", "period": "Month", "commodity": "Material",
             "stage": "Operation", "flow": "Transaction", "country": "Country",
             "partner_country": "Counterparty Country", "quantity": "Dry Tonnes",
             "grade": "Co Grade", "site_id": "Site Code", "contract_id": "Contract No",
             "price": "Price", "contract_type": "Pricing"},
            {"unit": "t", "basis": "gross", "price_unit": "USD/lb"},
            {"commodity": {"co_hydroxide": "Co(OH)2", "co_sulphate": "CoSO4.7H2O"},
             "stage": {"mining": "MINE", "refining": "REFINERY"},
             "flow": {"production": "PRODUCED", "export": "SHIP-OUT", "import": "SHIP-IN",
                      "stock_level": "CLOSING STOCK", "price": "PRICE"},
             "contract_type": {"long_term": "LT", "spot": "SPOT"}},
            basis="gross", price_unit="USD/lb", sheet="Report", id_format="LM-{n:05d}",
        ),
        (*_mines("cobalt", "COD", "co_hydroxide", {"CHN": 0.75, "FIN": 0.25},
                 LM_MINE_A=7000, LM_MINE_B=6000, LM_MINE_C=5000, LM_MINE_D=3500),
         _Site("LM-CN-01", "refinery", "cobalt", "CHN", 6500, "co_sulphate",
               {"COD": 1.0}, {"KOR": 0.20})),
        (_Price("cobalt", "mining", "COD", "co_hydroxide", "long_term", (16_800, 13_400)),),
        (_cov("cobalt", "mining", f"{_MINING} price", "COD"),
         _cov("cobalt", "refining", _REFINING, "CHN")),
    ),
    _Company(
        "equator-metals", "Equator Metals Corp (fictitious)", "mine",
        _Format(
            "equator_ops_{year}.parquet",
            {"record_id": "txn_id", "period": "month", "flow": "flow_code",
             "country": "country_iso3", "partner_country": "counterparty_iso3",
             "quantity": "qty_t_co", "site_id": "site", "contract_id": "contract",
             "price": "price_usd_lb", "contract_type": "price_basis"},
            {"commodity": "cobalt", "stage": "mining", "unit": "t", "basis": "contained",
             "price_unit": "USD/lb"},
            {"flow": {"production": "PRD", "export": "EXP", "stock_level": "STK",
                      "price": "PRC"},
             "contract_type": {"long_term": "term"}},
            price_unit="USD/lb", lower_case_countries=True, id_format="eq-{n:05d}",
        ),
        (*_mines("cobalt", "COD", "co_hydroxide", {"CHN": 0.70, "FIN": 0.30},
                 EQ_C1=6000, EQ_C2=4500, EQ_C3=3000),
         *_mines("cobalt", "IDN", "mhp", {"CHN": 1.0}, EQ_I1=4000)),
        (_Price("cobalt", "mining", "COD", "co_hydroxide", "long_term", (16_500, 13_200)),),
        (_cov("cobalt", "mining", f"{_MINING} price", "COD"),
         _cov("cobalt", "mining", _MINING, "IDN")),
    ),
    _Company(
        "yilgarn-lithium", "Yilgarn Lithium Ltd (fictitious)", "mine",
        _Format(
            "yilgarn_tonnages_{year}.csv",
            {"record_id": "Transaction ID", "period": "Period", "commodity": "Product",
             "stage": "Segment", "flow": "Movement", "country": "Country",
             "partner_country": "Destination/Origin", "quantity": "Dry Metric Tonnes",
             "grade": "Li Content (fraction)", "site_id": "Site",
             "contract_id": "Offtake Ref", "price": "Price", "contract_type": "Price Type"},
            {"unit": "t", "basis": "gross", "price_unit": "USD/t"},
            {"commodity": {"spodumene": "SC6", "li_hydroxide": "LiOH.H2O"},
             "stage": {"mining": "Mining", "refining": "Chemicals"},
             "flow": {"production": "Produced", "export": "Shipped", "import": "Received",
                      "stock_level": "Inventory", "price": "Realised Price"},
             "contract_type": {"spot": "Spot", "long_term": "Contract"}},
            basis="gross", id_format="YL-TX-{n:06d}",
        ),
        (*_mines("lithium", "AUS", "spodumene", {"CHN": 0.90, "KOR": 0.10},
                 YL_01=9500, YL_02=7500, YL_03=5500),
         _Site("YL-CN-1", "refinery", "lithium", "CHN", 9000, "li_hydroxide",
               {"AUS": 1.0}, {"KOR": 0.20, "JPN": 0.10})),
        (_Price("lithium", "mining", "AUS", "spodumene", "spot", (3_300, 950)),),
        (_cov("lithium", "mining", f"{_MINING} price", "AUS"),
         _cov("lithium", "refining", _REFINING, "CHN")),
    ),
    _Company(
        "southern-cross-lithium", "Southern Cross Lithium Pty Ltd (fictitious)", "mine",
        _Format(
            "SCL_operations_{year}.xlsx",
            {"record_id": "ID", "period": "Period", "stage": "Division", "flow": "Flow",
             "country": "Country", "partner_country": "Partner", "quantity": "Tonnes LCE",
             "site_id": "Asset", "contract_id": "Contract", "price": "Price (USD/kg)",
             "contract_type": "Sale Type"},
            # lithium carbonate equivalent: gross tonnes of Li2CO3 at 18.78 % Li
            {"commodity": "lithium", "unit": "t", "basis": "gross", "grade": 0.1878,
             "price_unit": "USD/kg"},
            {"stage": {"mining": "Mine Site", "refining": "Conversion"},
             "flow": {"production": "Production", "export": "Export", "import": "Import",
                      "stock_level": "Stock Level", "price": "Price"}},
            basis="gross", fixed_grade=0.1878, price_unit="USD/kg", sheet="Ops",
            id_format="SCL{n:05d}",
        ),
        (*_mines("lithium", "AUS", "spodumene", {"CHN": 1.0}, SC_MINE_1=8000, SC_MINE_2=5500),
         _Site("SC-CONV-1", "refinery", "lithium", "CHN", 7000, "li_hydroxide",
               {"AUS": 1.0}, {"KOR": 0.25})),
        (_Price("lithium", "refining", "CHN", "li_hydroxide", "spot", (30_000, 10_500)),),
        (_cov("lithium", "mining", _MINING, "AUS"),
         _cov("lithium", "refining", f"{_REFINING} price", "CHN")),
    ),
    _Company(
        "esperance-lithium", "Esperance Lithium Ltd (fictitious)", "mine",
        _Format(
            "esperance_ledger_{year}.tsv",
            {"record_id": "ledger_ref", "period": "yyyy_mm", "flow": "movement",
             "country": "site_country", "partner_country": "dest_country",
             "quantity": "li_tonnes", "site_id": "site", "contract_id": "sales_contract"},
            {"commodity": "lithium", "stage": "mining", "unit": "t", "basis": "contained"},
            {"flow": {"production": "output", "export": "outbound",
                      "stock_level": "closing_inventory"}},
            delimiter="\t", encoding="utf-8-sig", id_format="ESP{n:06d}",
        ),
        (*_mines("lithium", "AUS", "spodumene", {"CHN": 1.0}, ES_01=6500, ES_02=3500),
         *_mines("lithium", "ARG", "li_carbonate", {"CHN": 0.6, "JPN": 0.4}, ES_AR_1=2600)),
        (),
        (_cov("lithium", "mining", _MINING, "AUS ARG"),),
    ),
    _Company(
        "andes-lithium", "Andes Lithium SpA (fictitious)", "mine",
        _Format(
            "andes_movimientos_{year}.csv",
            {"record_id": "Folio", "period": "Periodo", "commodity": "Producto",
             "flow": "Movimiento", "country": "País", "partner_country": "País destino",
             "quantity": "Cantidad (kg Li)", "site_id": "Faena", "contract_id": "Contrato",
             "price": "Precio (USD/t)", "contract_type": "Modalidad"},
            {"stage": "mining", "unit": "kg", "basis": "contained", "price_unit": "USD/t"},
            {"commodity": {"li_carbonate": "Carbonato de litio"},
             "flow": {"production": "Producción", "export": "Exportación",
                      "stock_level": "Inventario", "price": "Precio"},
             "contract_type": {"long_term": "Largo plazo", "spot": "Spot"}},
            unit="kg", encoding="latin-1", id_format="AN.{n:06d}",
        ),
        (*_mines("lithium", "CHL", "li_carbonate", {"CHN": 0.60, "KOR": 0.25, "JPN": 0.15},
                 AN_CL_1=9000, AN_CL_2=6000),
         *_mines("lithium", "ARG", "li_carbonate", {"CHN": 1.0}, AN_AR_1=2800)),
        (_Price("lithium", "mining", "CHL", "li_carbonate", "long_term", (30_000, 12_500)),),
        (_cov("lithium", "mining", f"{_MINING} price", "CHL"),
         _cov("lithium", "mining", _MINING, "ARG")),
    ),
    _Company(
        "jiangxi-refining", "Jiangxi Battery Materials Co. (fictitious)", "refiner",
        _Format(
            "jx_refinery_ledger_{year}.parquet",
            {"record_id": "doc_no", "period": "period", "commodity": "metal",
             "flow": "move_type", "country": "plant_country", "partner_country": "trade_country",
             "quantity": "qty_t", "basis": "qty_basis", "grade": "assay", "site_id": "plant",
             "contract_id": "contract_no", "price": "unit_price", "contract_type": "deal_type"},
            {"stage": "refining", "unit": "t", "price_unit": "USD/t"},
            {"commodity": {"cobalt": "Co", "lithium": "Li"},
             "flow": {"import": "IN", "production": "MAKE", "export": "OUT",
                      "stock_level": "INV", "price": "PX"},
             "basis": {"gross": "dmt", "contained": "metal"}},
            basis="mixed", id_format="JX{n:07d}",
        ),
        tuple(_Site(site, "refinery", "cobalt", "CHN", t, "co_metal",
                    {"COD": 0.85, "IDN": 0.15}, {"KOR": 0.20, "JPN": 0.10})
              for site, t in (("JX-CO-1", 8000), ("JX-CO-2", 7000), ("JX-CO-3", 5500)))
        + tuple(_Site(site, "refinery", "lithium", "CHN", t, "li_carbonate",
                      {"AUS": 0.60, "CHL": 0.25, "ARG": 0.15}, {"KOR": 0.15, "JPN": 0.10})
                for site, t in (("JX-LI-1", 10_000), ("JX-LI-2", 8000))),
        (_Price("cobalt", "refining", "CHN", "co_metal", "spot", (33_500, 26_500)),
         _Price("lithium", "refining", "CHN", "li_carbonate", "spot", (28_000, 11_000))),
        (_cov("cobalt", "refining", f"{_REFINING} price", "CHN"),
         _cov("lithium", "refining", f"{_REFINING} price", "CHN")),
    ),
    _Company(
        "hanbit-cells", "Hanbit Cells Co., Ltd. (fictitious)", "battery_maker",
        _Format(
            "hanbit_mrp_{year}.xlsx",
            {"record_id": "Doc No", "period": "Posting Period", "commodity": "Material",
             "flow": "Movement Type", "country": "Plant Country",
             "partner_country": "Vendor Country", "quantity": "Qty", "unit": "UoM",
             "site_id": "Plant", "contract_id": "PO Contract"},
            {"stage": "manufacturing", "basis": "contained"},
            {"commodity": {"co_sulphate": "CO-SULF-BG", "li_hydroxide": "LIOH-BG"},
             "flow": {"import": "101", "consumption": "261", "stock_level": "EOM"},
             "unit": {"kg": "KG"}},
            unit="kg", sheet="MRP", id_format="HB-{n:06d}",
        ),
        (_Site("HB-P1", "plant", "cobalt", "KOR", 3000, "co_sulphate", {"CHN": 0.7, "FIN": 0.3}),
         _Site("HB-P2", "plant", "cobalt", "KOR", 2000, "co_sulphate", {"CHN": 0.7, "FIN": 0.3}),
         _Site("HB-P1", "plant", "lithium", "KOR", 4500, "li_hydroxide",
               {"CHN": 0.65, "CHL": 0.35}),
         _Site("HB-P2", "plant", "lithium", "KOR", 3500, "li_hydroxide",
               {"CHN": 0.65, "CHL": 0.35})),
        (),
        (_cov("cobalt", "manufacturing", _PLANT, "KOR"),
         _cov("lithium", "manufacturing", _PLANT, "KOR")),
    ),
    _Company(
        "keystone-recycling", "Keystone Battery Recycling Inc. (fictitious)", "recycler",
        _Format(
            "keystone_recycling_{year}.csv",
            {"record_id": "Lot ID", "period": "Month", "commodity": "Element",
             "stage": "Process", "flow": "Stream", "country": "Country",
             "quantity": "Weight (lb)", "grade": "Assay", "site_id": "Facility"},
            {"unit": "lb", "basis": "gross"},
            {"commodity": {"cobalt": "Co", "lithium": "Li"},
             "stage": {"end_of_life": "Recycling", "refining": "Hydromet"},
             "flow": {"recycling_input": "Feed", "waste": "Residue", "production": "Product"}},
            unit="lb", basis="gross", id_format="KR-{n:06d}",
        ),
        (_Site("KR-PA1", "recycling", "cobalt", "USA", 1200, "co_sulphate"),
         _Site("KR-PA1", "recycling", "lithium", "USA", 600, "li_carbonate")),
        (),
        (_cov("cobalt", "end_of_life", "recycling_input waste", "USA"),
         _cov("cobalt", "refining", "production", "USA"),
         _cov("lithium", "end_of_life", "recycling_input waste", "USA"),
         _cov("lithium", "refining", "production", "USA")),
    ),
)


# --------------------------------------------------------------------------- monthly records


def _wobble(rng: np.random.Generator, sd: float = 0.08) -> float:
    """A month's deviation from the average month (about +-8 %)."""
    return float(np.clip(1.0 + sd * rng.standard_normal(), 0.7, 1.3))


def _grade(rng: np.random.Generator, product: str, commodity: str) -> float:
    low, high = (0.03, 0.04) if (product, commodity) == ("black_mass", "lithium") \
        else _GRADES[product]
    return round(float(rng.uniform(low, high)), 4)


def _site_rows(rng: np.random.Generator, site: _Site, year: int) -> list[dict[str, Any]]:
    """24 months of a site: its flows, shipments (one contract per partner) and stocks.

    Rows are in standard terms (tonnes of contained element), before the company's
    conventions. Shipments carry a contract (``<site>-<partner>``), everything else the site.
    """
    rows: list[dict[str, Any]] = []

    def add(period: str, stage: str, flow: str, tonnes: float, product: str,
            partner: str | None = None) -> None:
        if tonnes > 0 or flow == "stock_level":
            rows.append({
                "period": period, "commodity": site.commodity, "product": product,
                "stage": stage, "flow": flow, "country": site.country, "partner": partner,
                "tonnes": tonnes, "grade": _grade(rng, product, site.commodity),
                "site": None if partner else site.site_id,
                "contract": f"{site.site_id}-{partner}" if partner else None,
                "origin": site.site_id,
            })

    growth = float(rng.uniform(0.85, 1.0))  # the year before was smaller
    stock = site.tonnes / 12 * float(rng.uniform(0.8, 1.6))
    recovery = 0.9 if site.commodity == "cobalt" else 0.8  # of the recycler
    stage = _STAGE.get(site.role, "refining")
    for y in (year - 1, year):
        monthly = site.tonnes / 12 * (growth if y < year else 1.0)
        for period in (f"{y}-{month:02d}" for month in range(1, 13)):
            if site.role == "recycling":
                feed = monthly * _wobble(rng)
                add(period, "end_of_life", "recycling_input", feed, "black_mass")
                add(period, "end_of_life", "waste", feed * float(rng.uniform(0.02, 0.05)),
                    "residue")
                add(period, "refining", "production",
                    feed * recovery * float(rng.uniform(0.95, 1.02)), site.product)
                continue
            if site.role == "plant":  # buys to keep about 1.2 months of use in store
                used = monthly * _wobble(rng)
                bought = max(0.0, used + 0.3 * (1.2 * monthly - stock)) * _wobble(rng, 0.05)
                used = min(used, stock + bought)
                stock += bought - used
                for origin, share in site.sources.items():
                    add(period, stage, "import", bought * share, site.product, origin)
                add(period, stage, "consumption", used, site.product)
            else:  # mine or refinery: sells down towards about 1.2 months of output
                made = monthly * _wobble(rng)
                for origin, share in site.sources.items():  # a refinery's feed
                    add(period, stage, "import", made / 0.96 * share * _wobble(rng, 0.05),
                        _FEED[(site.commodity, origin)], origin)
                sold = float(np.clip(made + 0.3 * (stock - 1.2 * monthly), 0.0, stock + made))
                stock += made - sold
                add(period, stage, "production", made, site.product)
                for destination, share in site.sales.items():
                    add(period, stage, "export", sold * share, site.product, destination)
            add(period, stage, "stock_level", stock, site.product)
    return rows


def _price_rows(rng: np.random.Generator, price: _Price, year: int) -> list[dict[str, Any]]:
    rows = []
    for y, level in zip((year - 1, year), price.usd_t, strict=True):
        for month in (3, 6, 9, 12):
            rows.append({
                "period": f"{y}-{month:02d}", "commodity": price.commodity,
                "product": price.product, "stage": price.stage, "flow": "price",
                "country": price.country, "price": level * _wobble(rng, 0.04),
                "contract_type": price.contract_type,
            })
    return rows


# --------------------------------------------------------------------------- company files


_Translations = dict[str, dict[str, str]]  # field -> {company's code: standard code}
#: Fields whose codes the standard reads case- and space-insensitively (``parse_code``).
_LENIENT = frozenset({"commodity", "stage", "flow", "basis", "unit"})


def _standard_reading(name: str, code: str) -> str:
    """What the standard makes of a company's code without a translation."""
    if name not in _LENIENT:
        return code
    return code.strip().lower().replace(" ", "_").replace("-", "_")


def _company_row(fmt: _Format, row: dict[str, Any], record_id: str,
                 translations: _Translations) -> dict[str, Any]:
    """A standard row as the company writes it: its units, codes and columns.

    Adds to ``translations`` each company code used that the standard does not read itself.
    """
    tonnes = row.get("tonnes")
    gross = fmt.basis == "gross" or (fmt.basis == "mixed" and row["flow"] == "import")
    grade = fmt.fixed_grade or row.get("grade")
    standard: dict[str, Any] = {
        "record_id": record_id,
        "period": row["period"],
        "commodity": row["commodity"],
        "stage": row["stage"],
        "flow": row["flow"],
        "country": row["country"],
        "partner_country": row.get("partner"),
        "unit": fmt.unit,
        "basis": "gross" if gross else "contained",
        "grade": grade if gross and tonnes is not None else None,
        "site_id": row.get("site"),
        "contract_id": row.get("contract"),
        "contract_type": row.get("contract_type"),
    }
    if tonnes is not None:
        mass = (tonnes / grade if gross else tonnes) / MASS_UNITS[fmt.unit]
        standard["quantity"] = round(mass) if fmt.unit in ("kg", "lb") else round(mass, 3)
    if "price" in row:
        price = row["price"] / PRICE_UNITS[fmt.price_unit.lower()]
        standard["price"] = round(price) if fmt.price_unit == "USD/t" else round(price, 2)
    out = {}
    for name, column in fmt.columns.items():
        value = standard.get(name)
        if name in fmt.codes and value is not None:
            codes = fmt.codes[name]
            code = codes.get(row["product"], codes.get(value, value)) \
                if name == "commodity" else codes.get(value, value)
            if _standard_reading(name, code) != value:
                translations.setdefault(name, {})[code] = value
            value = code
        if name in ("country", "partner_country") and value and fmt.lower_case_countries:
            value = value.lower()
        out[column] = value
    return out | fmt.extra


def _frame(fmt: _Format, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The company's table: text columns, numbers where the company writes numbers."""
    numeric = {"quantity": pl.Int64 if fmt.unit in ("kg", "lb") else pl.Float64,
               "grade": pl.Float64,
               "price": pl.Int64 if fmt.price_unit == "USD/t" else pl.Float64}
    schema = {column: numeric.get(name, pl.String) for name, column in fmt.columns.items()}
    schema.update(dict.fromkeys(fmt.extra, pl.String))
    return pl.DataFrame(rows, schema=schema, orient="row")


def _write_table(frame: pl.DataFrame, fmt: _Format, path: Path) -> None:
    if path.suffix in (".csv", ".tsv"):
        text = frame.write_csv(separator=fmt.delimiter)
        path.write_bytes(text.encode(fmt.encoding))
    elif path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        assert sheet is not None
        sheet.title = fmt.sheet or "Sheet1"
        sheet.append(frame.columns)
        for values in frame.iter_rows():
            sheet.append(list(values))
        workbook.save(path)


def _toml_value(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string or number is valid TOML


def _mapping_toml(company: _Company, path: Path, translations: _Translations) -> str:
    """The mapping file of ``path`` (see docs/ingest.md)."""
    fmt = company.fmt
    kind = {".csv": "csv", ".tsv": "csv", ".xlsx": "xlsx", ".parquet": "parquet"}[path.suffix]
    lines = [f"# Maps {path.name} of {company.display_name} onto the data standard.",
             "# Generated sample data (crimmis_dpn.demo.write_sample_data).", "",
             "[file]", f"format = {_toml_value(kind)}"]
    if kind == "xlsx":
        lines.append(f"sheet = {_toml_value(fmt.sheet)}")
    if kind == "csv":
        lines += [f"delimiter = {_toml_value(fmt.delimiter)}",
                  f"encoding = {_toml_value(fmt.encoding)}"]
    lines += ["", "[columns]"]
    lines += [f"{name} = {_toml_value(column)}" for name, column in fmt.columns.items()]
    lines += ["", "[constants]"]
    lines += [f"{name} = {_toml_value(value)}" for name, value in fmt.constants.items()]
    for name, table in translations.items():
        lines += ["", f"[values.{name}]"]
        lines += [f"{_toml_value(code)} = {_toml_value(table[code])}" for code in sorted(table)]
    return "\n".join(lines) + "\n"


def write_sample_data(out_dir: Path, *, year: int = 2024, seed: int = 7) -> list[SampleCompany]:
    """Write each company's file and mapping under ``out_dir/<node_id>/``; return them.

    Records cover every month of ``year - 1`` and ``year``. The output depends only on
    ``year`` and ``seed`` (``numpy.random.default_rng([seed, i])`` for the ``i``-th company).
    """
    companies = []
    for index, company in enumerate(_COMPANIES):
        rng = np.random.default_rng([seed, index])
        rows = [r for site in company.sites for r in _site_rows(rng, site, year)]
        rows += [r for price in company.prices for r in _price_rows(rng, price, year)]
        rows.sort(key=lambda r: (r["period"], r["flow"] == "price", r.get("origin", ""),
                                 r["commodity"], _FLOW_ORDER.index(r["flow"]),
                                 r.get("partner") or ""))
        fmt = company.fmt
        translations: _Translations = {}
        written = [_company_row(fmt, r, fmt.id_format.format(n=n), translations)
                   for n, r in enumerate(rows, start=1)]
        folder = out_dir / company.node_id
        folder.mkdir(parents=True, exist_ok=True)
        data_file = folder / fmt.file_name.format(year=year)
        _write_table(_frame(fmt, written), fmt, data_file)
        mapping_file = folder / "mapping.toml"
        mapping_file.write_text(_mapping_toml(company, data_file, translations), encoding="utf-8")
        companies.append(SampleCompany(company.node_id, company.display_name, company.kind,
                                       data_file, mapping_file, company.coverage))
    return companies
