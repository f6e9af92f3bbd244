"""The demo's sample data: every file maps onto the standard, inside each company's coverage,
with enough companies per cell to publish the main balance cells, and figures of the order of
the public reference figures.

The files are read here by a tiny reader of the test's own (polars, then the mapping's
columns, constants and translations), independent of the node's ingest.
"""

from __future__ import annotations

import io
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from coordinator import DEFAULT_UNIT_BOUNDS
from crimmis_dpn.demo import SampleCompany, reference_figures, write_sample_data
from protocols import ReportingRecord

YEAR = 2024
SEED = 7
#: Flows of the balance's flows query (summed per contribution unit and year).
BALANCE_FLOWS = {"production", "import", "export", "consumption", "recycling_input", "waste"}
MONTHS = [f"{y}-{m:02d}" for y in (YEAR - 1, YEAR) for m in range(1, 13)]


@dataclass
class Loaded:
    """One company's file as mapped onto the standard."""

    company: SampleCompany
    mapping: dict[str, Any]
    frame: pl.DataFrame
    records: list[ReportingRecord]
    errors: list[str]


def read_frame(path: Path, mapping: dict[str, Any]) -> pl.DataFrame:
    options = mapping.get("file", {})
    kind = options["format"]
    if kind == "csv":
        text = path.read_bytes().decode(options.get("encoding", "utf-8"))
        return pl.read_csv(io.BytesIO(text.encode("utf-8")), infer_schema=False,
                           separator=options.get("delimiter", ","))
    if kind == "xlsx":
        return pl.read_excel(path, sheet_name=options["sheet"], engine="openpyxl",
                             infer_schema_length=0)
    assert kind == "parquet"
    return pl.read_parquet(path)


def mapped_rows(frame: pl.DataFrame, mapping: dict[str, Any]) -> list[dict[str, Any]]:
    """Each row as the standard's fields: constants, then mapped cells, translated."""
    columns, values = mapping.get("columns", {}), mapping.get("values", {})
    rows = []
    for row in frame.iter_rows(named=True):
        data = dict(mapping.get("constants", {}))
        for field, column in columns.items():
            cell = row[column]
            if isinstance(cell, str):
                cell = values.get(field, {}).get(cell.strip(), cell.strip()) or None
            if cell is not None:
                data[field] = cell
        rows.append(data)
    return rows


def load(company: SampleCompany) -> Loaded:
    mapping = tomllib.loads(company.mapping_file.read_text(encoding="utf-8"))
    frame = read_frame(company.data_file, mapping)
    records, errors = [], []
    for number, data in enumerate(mapped_rows(frame, mapping), start=2):
        try:
            records.append(ReportingRecord.model_validate(data))
        except ValidationError as exc:
            errors.append(f"{company.data_file.name} row {number}: {exc}")
    return Loaded(company, mapping, frame, records, errors)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> list[Loaded]:
    companies = write_sample_data(tmp_path_factory.mktemp("sample"), year=YEAR, seed=SEED)
    return [load(company) for company in companies]


def declaring(pool: list[Loaded], commodity: str, stage: str, flow: str,
              country: str) -> list[str]:
    return [
        p.company.node_id for p in pool
        if any(e.covers(commodity=commodity, stage=stage, flow=flow, country=country)
               for e in p.company.coverage)
    ]


def pooled_tonnes(pool: list[Loaded], commodity: str, stage: str, flow: str, country: str,
                  year: int = YEAR) -> float:
    return sum(
        r.quantity_t or 0.0 for p in pool for r in p.records
        if (r.commodity, r.stage, r.flow, r.country) == (commodity, stage, flow, country)
        and r.period.startswith(f"{year}-")
    )


# --------------------------------------------------------------------------- the companies


def test_at_least_eight_companies_of_every_kind(pool: list[Loaded]) -> None:
    ids = [p.company.node_id for p in pool]
    assert len(ids) >= 8
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9-]+", node_id) for node_id in ids)
    kinds = [p.company.kind for p in pool]
    assert set(kinds) == {"mine", "refiner", "battery_maker", "recycler"}
    assert kinds.count("mine") >= 5
    for p in pool:
        assert p.company.data_file.is_file()
        assert p.company.mapping_file.parent == p.company.data_file.parent


def test_each_company_has_a_few_hundred_to_a_few_thousand_records(pool: list[Loaded]) -> None:
    for p in pool:
        assert 100 <= p.frame.height <= 3000, p.company.node_id


# --------------------------------------------------------------------------- the standard


def test_every_row_of_every_file_validates_after_mapping(pool: list[Loaded]) -> None:
    errors = [e for p in pool for e in p.errors]
    assert errors == []
    for p in pool:
        assert len(p.records) == p.frame.height
        ids = [r.record_id for r in p.records]
        assert len(set(ids)) == len(ids), p.company.node_id


def test_mapping_files_use_only_the_mapping_format(pool: list[Loaded]) -> None:
    fields = set(ReportingRecord.model_fields)
    for p in pool:
        m = p.mapping
        assert set(m) <= {"file", "columns", "constants", "values"}
        assert set(m["file"]) <= {"format", "sheet", "delimiter", "encoding"}
        assert set(m["columns"]) | set(m.get("constants", {})) <= fields
        assert not set(m["columns"]) & set(m.get("constants", {}))
        assert set(m.get("values", {})) <= set(m["columns"])
        assert set(m["columns"].values()) <= set(p.frame.columns)
        if m["file"]["format"] == "csv":
            assert m["file"]["encoding"] in {"utf-8", "utf-8-sig", "latin-1", "cp1252"}


def test_formats_and_conventions_vary_as_real_exports_do(pool: list[Loaded]) -> None:
    files = [p.mapping["file"] for p in pool]
    assert {f["format"] for f in files} == {"csv", "xlsx", "parquet"}
    legacy = [p for p in pool if p.mapping["file"].get("delimiter") == ";"
              and p.mapping["file"].get("encoding") in ("cp1252", "latin-1")]
    assert legacy
    for p in legacy:  # really encoded in the legacy code page, accents included
        raw = p.company.data_file.read_bytes()
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
    records = [r for p in pool for r in p.records]
    assert {r.unit.lower() for r in records if r.unit} >= {"kg", "t", "lb"}
    assert {r.basis for r in records if r.quantity is not None} == {"gross", "contained"}
    assert any(r.grade is not None for r in records)
    assert len({col for p in pool for col in p.mapping["columns"].values()}) > 50
    translated = {(f, code) for p in pool for f, t in p.mapping.get("values", {}).items()
                  for code in t}
    assert ("flow", "SHIP-OUT") in translated
    assert ("commodity", "Co(OH)2") in translated
    lower = [
        p for p in pool
        if (column := p.mapping["columns"].get("country"))
        and p.frame[column].cast(pl.String).str.contains("^[a-z]{3}$").any()
    ]
    assert lower


# --------------------------------------------------------------------------- coverage


def test_every_record_lies_inside_its_company_coverage(pool: list[Loaded]) -> None:
    for p in pool:
        outside = [
            r.record_id for r in p.records
            if not any(e.covers(commodity=r.commodity, stage=r.stage, flow=r.flow,
                                country=r.country) for e in p.company.coverage)
        ]
        assert outside == [], p.company.node_id


def test_every_declared_cell_has_records(pool: list[Loaded]) -> None:
    """No company declares more than it reports (that would overstate contributors)."""
    for p in pool:
        present = {(r.commodity, r.stage, r.flow, r.country) for r in p.records}
        for e in p.company.coverage:
            for stage in e.stages:
                for flow in e.flows:
                    for country in e.countries:
                        assert (e.commodity, stage, flow, country) in present, \
                            (p.company.node_id, e.commodity, stage, flow, country)


@pytest.mark.parametrize(("commodity", "mining_country"), [("cobalt", "COD"),
                                                            ("lithium", "AUS")])
def test_main_cells_are_declared_by_at_least_three_companies(
    pool: list[Loaded], commodity: str, mining_country: str
) -> None:
    for stage, flow, country in [("mining", "production", mining_country),
                                 ("mining", "export", mining_country),
                                 ("mining", "stock_level", mining_country),
                                 ("refining", "production", "CHN"),
                                 ("refining", "import", "CHN")]:
        assert len(declaring(pool, commodity, stage, flow, country)) >= 3, (stage, flow, country)


def test_some_cells_have_only_one_or_two_companies(pool: list[Loaded]) -> None:
    assert len(declaring(pool, "cobalt", "mining", "production", "IDN")) == 1
    assert len(declaring(pool, "lithium", "mining", "production", "CHL")) == 1
    assert len(declaring(pool, "lithium", "mining", "production", "ARG")) == 2
    assert len(declaring(pool, "cobalt", "manufacturing", "consumption", "KOR")) == 1
    assert len(declaring(pool, "lithium", "end_of_life", "recycling_input", "USA")) == 1


# --------------------------------------------------------------------------- figures


def test_reference_figures_have_sources_and_plausible_pool_shares() -> None:
    figures = reference_figures()
    assert len(figures) >= 6
    for f in figures:
        assert f.source and f.tonnes > 0
        if f.pool_share is not None:
            low, high = f.pool_share
            assert 0 < low < high <= 1
    cobalt_cod = next(f for f in figures if (f.commodity, f.country, f.stage)
                      == ("cobalt", "COD", "mining"))
    assert cobalt_cod.tonnes == 170_000 and "USGS" in cobalt_cod.source
    assert cobalt_cod.pool_share == (0.30, 1.00)


def test_pooled_totals_are_of_the_order_of_the_reference_figures(pool: list[Loaded]) -> None:
    checked = 0
    for f in reference_figures():
        if f.pool_share is None:
            continue
        total = pooled_tonnes(pool, f.commodity, f.stage, f.flow, f.country)
        low, high = f.pool_share
        assert low * f.tonnes <= total <= high * f.tonnes, (f.commodity, f.country, total)
        checked += 1
    assert checked >= 6
    assert pooled_tonnes(pool, "cobalt", "mining", "production", "COD") >= 0.30 * 170_000


def test_mining_sites_are_sized_like_real_sites(pool: list[Loaded]) -> None:
    per_site: dict[tuple[str, str, int], float] = defaultdict(float)
    for p in pool:
        for r in p.records:
            if r.stage == "mining" and r.flow == "production":
                assert r.site_id is not None
                per_site[(r.commodity, r.site_id, int(r.period[:4]))] += r.quantity_t or 0.0
    assert len({site for _, site, _ in per_site}) >= 20
    for (commodity, site, year), tonnes in per_site.items():
        low, high = (1000, 8000) if commodity == "cobalt" else (2000, 12_000)
        assert low <= tonnes <= high, (site, year, tonnes)


def test_no_unit_year_exceeds_the_balance_contribution_bound(pool: list[Loaded]) -> None:
    for p in pool:
        totals: dict[tuple[str, str, str], float] = defaultdict(float)
        for r in p.records:
            bound = DEFAULT_UNIT_BOUNDS[r.commodity]
            if r.flow in BALANCE_FLOWS:
                totals[(r.commodity, r.contribution_unit, r.period[:4])] += r.quantity_t or 0.0
            if r.flow == "stock_level":
                assert (r.quantity_t or 0.0) <= bound
        for (commodity, unit, year), tonnes in totals.items():
            assert tonnes <= DEFAULT_UNIT_BOUNDS[commodity], (p.company.node_id, unit, year)


# --------------------------------------------------------------------------- record detail


def test_december_stock_levels_exist_for_both_years_per_site(pool: list[Loaded]) -> None:
    sites = 0
    for p in pool:
        stocks = defaultdict(set)
        for r in p.records:
            if r.flow == "stock_level":
                stocks[(r.commodity, r.site_id)].add(r.period)
        for key, periods in stocks.items():
            assert {f"{YEAR - 1}-12", f"{YEAR}-12"} <= periods, (p.company.node_id, key)
            assert periods == set(MONTHS)
        sites += len(stocks)
    assert sites >= 25


def test_mines_report_every_month_of_both_years(pool: list[Loaded]) -> None:
    for p in pool:
        if p.company.kind != "mine":
            continue
        for flow in ("production", "export"):
            periods = {r.period for r in p.records if r.stage == "mining" and r.flow == flow}
            assert periods == set(MONTHS), (p.company.node_id, flow)


def test_shipments_have_partners_and_contracts(pool: list[Loaded]) -> None:
    shipments = [r for p in pool for r in p.records if r.flow in ("import", "export")]
    assert {r.partner_country for r in shipments} >= {"CHN", "FIN", "COD", "AUS", "KOR"}
    assert all(r.contract_id is not None for r in shipments)


def test_battery_maker_and_recycler_flows(pool: list[Loaded]) -> None:
    by_kind = {p.company.kind: p for p in pool}
    maker = {(r.stage, r.flow) for r in by_kind["battery_maker"].records}
    assert {("manufacturing", "consumption"), ("manufacturing", "import")} <= maker
    recycler = {(r.stage, r.flow) for r in by_kind["recycler"].records}
    assert {("end_of_life", "recycling_input"), ("end_of_life", "waste"),
            ("refining", "production")} <= recycler


def test_a_few_prices_with_both_contract_types_and_several_units(pool: list[Loaded]) -> None:
    prices = [r for p in pool for r in p.records if r.flow == "price"]
    assert 10 <= len(prices) <= 200
    assert {r.contract_type for r in prices} == {"spot", "long_term"}
    assert {r.price_unit.upper() for r in prices if r.price_unit} >= {"USD/T", "USD/LB",
                                                                       "USD/KG"}
    assert all((r.price_usd_t or 0) > 100 for r in prices)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first = write_sample_data(tmp_path / "a", year=YEAR, seed=3)
    second = write_sample_data(tmp_path / "b", year=YEAR, seed=3)
    assert first[0].coverage == second[0].coverage
    for a, b in zip(first, second, strict=True):
        assert a.data_file.name == b.data_file.name
        assert a.mapping_file.read_bytes() == b.mapping_file.read_bytes()
        if a.data_file.suffix != ".xlsx":  # a workbook records when it was saved
            assert a.data_file.read_bytes() == b.data_file.read_bytes()
        mapping = tomllib.loads(a.mapping_file.read_text(encoding="utf-8"))
        assert read_frame(a.data_file, mapping).equals(read_frame(b.data_file, mapping))
    other = write_sample_data(tmp_path / "c", year=YEAR, seed=4)
    assert other[0].data_file.read_bytes() != first[0].data_file.read_bytes()


def test_year_sets_the_two_years_reported(tmp_path: Path) -> None:
    companies = write_sample_data(tmp_path, year=2022)
    loaded = load(companies[0])
    assert loaded.errors == []
    assert {r.period[:4] for r in loaded.records} == {"2021", "2022"}
    assert "2022" in companies[0].data_file.name
