"""Importing company files: mapping, validation of every row, atomicity and idempotency."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
import pytest
from sqlalchemy import Engine, func, insert, select

import node._ingest as ingest_module
from node import (
    IngestError,
    IngestProblem,
    IngestReport,
    Mapping,
    create_schema,
    ingest_file,
    load_mapping,
    make_engine,
)
from node._db import NodeTable, utcnow

IMPORTS = NodeTable.metadata.tables["imports"]
RECORDS = NodeTable.metadata.tables["records"]

HEADER = [
    "TxnRef",
    "Month",
    "Product",
    "Movement",
    "Site country",
    "Destination",
    "Qty",
    "UoM",
    "Co grade",
]

MAPPING_TOML = """\
[columns]
record_id = "TxnRef"
period = "Month"
commodity = "Product"
flow = "Movement"
country = "Site country"
partner_country = "Destination"
quantity = "Qty"
unit = "UoM"
grade = "Co grade"

[constants]
stage = "mining"
basis = "gross"

[values.commodity]
"Co hydroxide" = "cobalt"
"Cu concentrate" = "copper"

[values.flow]
"Shipped" = "export"
"Mined" = "production"
"""

LB = 0.45359237e-3  # tonnes per pound


def good_rows() -> list[list[str]]:
    return [
        ["TX-1", "2024-07", "Co hydroxide", "Shipped", "COD", "CHN", "100", "t", "0.3"],
        ["TX-2", "2024-07", "Co hydroxide", "Mined", "COD", "", "2000", "kg", "0.5"],
        ["TX-3", "2024-Q3", "Cu concentrate", "Shipped", "ZMB", "ZAF", "1000", "lb", "0.25"],
    ]


def write_csv(
    path: Path, rows: list[list[str]], *, header: list[str] = HEADER, encoding: str = "utf-8"
) -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def mapping(tmp_path: Path) -> Mapping:
    path = tmp_path / "acme.toml"
    path.write_text(MAPPING_TOML, encoding="utf-8")
    return load_mapping(path)


def new_engine(url: str) -> Engine:
    engine = make_engine(url)
    create_schema(engine=engine)
    return engine


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = new_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def any_engine(database_url: str) -> Iterator[Engine]:
    """An engine on SQLite, then on PostgreSQL."""
    engine = new_engine(database_url)
    yield engine
    engine.dispose()


def counts(engine: Engine) -> tuple[int, int]:
    """(imports, records) in the database."""
    with engine.connect() as conn:
        imports = conn.execute(select(func.count()).select_from(IMPORTS)).scalar_one()
        records = conn.execute(select(func.count()).select_from(RECORDS)).scalar_one()
    return imports, records


def stored(engine: Engine, *columns: str) -> list[tuple[Any, ...]]:
    """The given columns of every stored record, ordered by record_id."""
    with engine.connect() as conn:
        query = select(*(RECORDS.c[name] for name in columns)).order_by(RECORDS.c.record_id)
        return [tuple(row) for row in conn.execute(query)]


def problems_of(
    info: pytest.ExceptionInfo[IngestError],
) -> list[tuple[int | None, str | None, str]]:
    return [(p.row, p.field, p.reason) for p in info.value.problems]


def refuse(
    engine: Engine, path: Path, mapping: Mapping
) -> list[tuple[int | None, str | None, str]]:
    """Import ``path``, expecting a refusal; return its problems as (row, field, reason)."""
    before = counts(engine)
    with pytest.raises(IngestError) as info:
        ingest_file(engine=engine, path=path, mapping=mapping)
    assert counts(engine) == before
    assert {p.file for p in info.value.problems} == {path.name}
    return problems_of(info)


# --------------------------------------------------------------------------- valid files


def test_valid_csv_is_stored_normalised(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    path = write_csv(tmp_path / "acme-2024-07.csv", good_rows())
    report = ingest_file(engine=engine, path=path, mapping=mapping)

    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert report == IngestReport(
        file_name="acme-2024-07.csv",
        sha256=sha256,
        rows_imported=3,
        already_imported=False,
        import_id=report.import_id,
    )
    with engine.connect() as conn:
        imports = conn.execute(
            select(
                IMPORTS.c.id,
                IMPORTS.c.file_name,
                IMPORTS.c.sha256,
                IMPORTS.c.mapping_sha256,
                IMPORTS.c.row_count,
            )
        ).all()
    assert [tuple(row) for row in imports] == [
        (report.import_id, "acme-2024-07.csv", sha256, mapping.mapping_sha256, 3)
    ]
    jul, sep = 2024 * 12 + 6, 2024 * 12 + 8
    assert stored(
        engine,
        "import_id",
        "record_id",
        "period",
        "year",
        "first_month",
        "last_month",
        "commodity",
        "stage",
        "flow",
        "country",
        "partner_country",
        "quantity",
        "unit",
        "basis",
        "grade",
        "price",
        "contribution_unit",
    ) == [
        (
            report.import_id,
            "TX-1",
            "2024-07",
            2024,
            jul,
            jul,
            "cobalt",
            "mining",
            "export",
            "COD",
            "CHN",
            100.0,
            "t",
            "gross",
            0.3,
            None,
            "record:TX-1",
        ),
        (
            report.import_id,
            "TX-2",
            "2024-07",
            2024,
            jul,
            jul,
            "cobalt",
            "mining",
            "production",
            "COD",
            None,
            2000.0,
            "kg",
            "gross",
            0.5,
            None,
            "record:TX-2",
        ),
        (
            report.import_id,
            "TX-3",
            "2024-Q3",
            2024,
            jul,
            sep,
            "copper",
            "mining",
            "export",
            "ZMB",
            "ZAF",
            1000.0,
            "lb",
            "gross",
            0.25,
            None,
            "record:TX-3",
        ),
    ]
    tonnes = stored(engine, "record_id", "quantity_t", "price_usd_t")
    assert tonnes == [
        ("TX-1", pytest.approx(30.0), None),  # 100 t gross x 0.3
        ("TX-2", pytest.approx(1.0), None),  # 2000 kg = 2 t gross x 0.5
        ("TX-3", pytest.approx(1000 * LB * 0.25), None),  # 1000 lb x 0.25
    ]


def test_prices_contained_basis_sites_and_contracts(tmp_path: Path, engine: Engine) -> None:
    mapping = Mapping.model_validate(
        {
            "file": {"delimiter": ";"},
            "columns": {
                "record_id": "id",
                "period": "period",
                "flow": "kind",
                "quantity": "amount",
                "unit": "unit",
                "price": "price",
                "price_unit": "price unit",
                "contract_type": "contract",
                "site_id": "site",
                "contract_id": "contract no",
            },
            "constants": {"commodity": "lithium", "stage": "refining", "country": "AUS"},
            "values": {"price_unit": {"$/lb": "USD/lb"}, "flow": {"S": "stock_level"}},
        }
    )
    path = tmp_path / "plant.csv"
    path.write_text(
        "id;period;kind;amount;unit;price;price unit;contract;site;contract no\n"
        "P-1;2024-03;price;;;12.5;$/lb;spot;;K-77\n"
        "P-2;2024;production;2.5;kt;;;;kwinana;\n"
        "P-3;2024-12;S;800;t;;;;kwinana;\n",
        encoding="utf-8",
    )
    mapping = mapping.model_copy(update={"constants": {**mapping.constants, "basis": "contained"}})
    report = ingest_file(engine=engine, path=path, mapping=mapping)
    assert report.rows_imported == 3
    assert stored(
        engine,
        "record_id",
        "flow",
        "basis",
        "quantity_t",
        "price_usd_t",
        "contract_type",
        "contribution_unit",
        "first_month",
        "last_month",
    ) == [
        (
            "P-1",
            "price",
            "contained",
            None,
            pytest.approx(12.5 / LB),
            "spot",
            "contract:K-77",
            2024 * 12 + 2,
            2024 * 12 + 2,
        ),
        (
            "P-2",
            "production",
            "contained",
            pytest.approx(2500.0),
            None,
            None,
            "site:kwinana",
            2024 * 12,
            2024 * 12 + 11,
        ),
        (
            "P-3",
            "stock_level",
            "contained",
            pytest.approx(800.0),
            None,
            None,
            "site:kwinana",
            2024 * 12 + 11,
            2024 * 12 + 11,
        ),
    ]


def test_xlsx_sheet_with_native_cell_types(tmp_path: Path, engine: Engine) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "Notes"
    workbook.active.append(["This sheet is not data"])
    sheet = workbook.create_sheet("Data")
    sheet.append(HEADER)
    sheet.append(
        [1001, datetime(2024, 7, 1), "Co hydroxide", "Shipped", "COD", "CHN", 100, "t", 0.3]
    )
    sheet.append([1002, "2024-08", "Co hydroxide", "Mined", "COD", None, 12.5, "t", 0.62])
    sheet.append([1003, 2024, "Cu concentrate", "Mined", "ZMB", None, 7, "kt", 1])
    path = tmp_path / "acme.xlsx"
    workbook.save(path)
    mapping = Mapping.model_validate(
        {**load_toml_mapping(), "file": {"sheet": "Data"}},
    )
    report = ingest_file(engine=engine, path=path, mapping=mapping)
    assert report.rows_imported == 3
    assert stored(engine, "record_id", "period", "flow", "quantity", "grade", "quantity_t") == [
        ("1001", "2024-07", "export", 100.0, 0.3, pytest.approx(30.0)),
        ("1002", "2024-08", "production", 12.5, 0.62, pytest.approx(7.75)),
        ("1003", "2024", "production", 7.0, 1.0, pytest.approx(7000.0)),
    ]


def test_parquet_with_native_column_types(tmp_path: Path, engine: Engine) -> None:
    frame = pl.DataFrame(
        {
            "TxnRef": [7001.0, 7002.0],  # ids stored as floats read as whole numbers
            "Month": [datetime(2024, 1, 31, 13, 5), datetime(2024, 2, 29)],
            "Product": ["Co hydroxide", "Co hydroxide"],
            "Movement": ["Shipped", "Mined"],
            "Site country": ["COD", "COD"],
            "Destination": ["CHN", None],
            "Qty": [40.0, 1.5],
            "UoM": ["t", "t"],
            "Co grade": [0.25, 0.4],
        }
    )
    path = tmp_path / "acme.parquet"
    frame.write_parquet(path)
    report = ingest_file(
        engine=engine, path=path, mapping=Mapping.model_validate(load_toml_mapping())
    )
    assert report.rows_imported == 2
    assert stored(engine, "record_id", "period", "partner_country", "quantity_t") == [
        ("7001", "2024-01", "CHN", pytest.approx(10.0)),
        ("7002", "2024-02", None, pytest.approx(0.6)),
    ]


def test_parquet_dates_and_integers(tmp_path: Path, engine: Engine) -> None:
    frame = pl.DataFrame(
        {
            "TxnRef": [1, 2],
            "Month": [date(2024, 1, 31), date(2024, 12, 1)],
            "Product": ["Co hydroxide", "Co hydroxide"],
            "Movement": ["Mined", "Mined"],
            "Site country": ["COD", "COD"],
            "Destination": [None, None],
            "Qty": [3, 4],
            "UoM": ["t", "t"],
            "Co grade": [1, 1],
        }
    )
    path = tmp_path / "ints.parquet"
    frame.write_parquet(path)
    mapping = Mapping.model_validate(load_toml_mapping())
    assert ingest_file(engine=engine, path=path, mapping=mapping).rows_imported == 2
    assert stored(engine, "record_id", "period", "quantity_t") == [
        ("1", "2024-01", pytest.approx(3.0)),
        ("2", "2024-12", pytest.approx(4.0)),
    ]


def test_translations_to_blank_and_of_formula_like_codes(tmp_path: Path, engine: Engine) -> None:
    data = load_toml_mapping()
    data["values"]["partner_country"] = {"n/a": ""}
    data["values"]["flow"]["+IN"] = "import"
    rows = [
        ["TX-1", "2024-07", "Co hydroxide", "Mined", "COD", "n/a", "1", "t", "0.5"],
        ["TX-2", "2024-07", "Co hydroxide", "+IN", "COD", "ZMB", "1", "t", "0.5"],
    ]
    path = write_csv(tmp_path / "t.csv", rows)
    ingest_file(engine=engine, path=path, mapping=Mapping.model_validate(data))
    assert stored(engine, "record_id", "flow", "partner_country") == [
        ("TX-1", "production", None),
        ("TX-2", "import", "ZMB"),
    ]


def test_tsv_with_byte_order_mark(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    path = tmp_path / "acme.tsv"
    text = "\n".join("\t".join(row) for row in [HEADER, *good_rows()])
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert ingest_file(engine=engine, path=path, mapping=mapping).rows_imported == 3
    assert stored(engine, "record_id") == [("TX-1",), ("TX-2",), ("TX-3",)]


def load_toml_mapping() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(MAPPING_TOML)


def test_numbers_with_a_plus_sign_are_numbers(
    tmp_path: Path, engine: Engine, mapping: Mapping
) -> None:
    rows = [["TX-1", "2024-07", "Co hydroxide", "Mined", "COD", "", "+5", "t", "+0.5"]]
    ingest_file(engine=engine, path=write_csv(tmp_path / "plus.csv", rows), mapping=mapping)
    assert stored(engine, "record_id", "quantity", "grade", "quantity_t") == [
        ("TX-1", 5.0, 0.5, pytest.approx(2.5))
    ]


def test_blank_rows_are_skipped_and_rows_keep_their_numbers(
    tmp_path: Path, engine: Engine, mapping: Mapping
) -> None:
    path = tmp_path / "gaps.csv"
    lines = [",".join(HEADER)] + [",".join(row) for row in good_rows()[:2]]
    lines += ["", ",,,,,,,,", "TX-9,2024-07,Co hydroxide,Mined,COD,,-1,t,0.5", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    assert refuse(engine, path, mapping) == [(6, "quantity", "quantity -1.0 is negative")]

    path.write_text("\n".join(lines).replace(",-1,", ",1,"), encoding="utf-8")
    report = ingest_file(engine=engine, path=path, mapping=mapping)
    assert report.rows_imported == 3
    assert stored(engine, "record_id") == [("TX-1",), ("TX-2",), ("TX-9",)]


def test_latin1_file_with_declared_encoding(tmp_path: Path, engine: Engine) -> None:
    mapping = Mapping.model_validate(
        {
            **load_toml_mapping(),
            "file": {"encoding": "latin-1"},
            "values": {
                "commodity": {"Hidróxido de cobalto": "cobalt"},
                "flow": {"Exportação": "export"},
            },
        }
    )
    rows = [
        ["TX-1", "2024-07", "Hidróxido de cobalto", "Exportação", "COD", "CHN", "10", "t", "0.3"]
    ]
    path = write_csv(tmp_path / "latin1.csv", rows, encoding="latin-1")
    assert ingest_file(engine=engine, path=path, mapping=mapping).rows_imported == 1
    assert stored(engine, "record_id", "commodity", "flow") == [("TX-1", "cobalt", "export")]


# --------------------------------------------------------------------------- bad rows


def test_every_bad_row_is_reported(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    rows = [
        *good_rows()[:1],
        ["TX-2", "2024-07", "Cobalt sulphate", "Mined", "COD", "", "10", "t", "0.2"],
        ["TX-3", "2024-07", "Co hydroxide", "Mined", "COD", "", "-5", "t", "0.2"],
        ["TX-4", "2024-07", "Co hydroxide", "Mined", "CD", "", "10", "t", "0.2"],
        ["TX-5", "2024-13", "Co hydroxide", "Mined", "COD", "", "10", "t", "0.2"],
        ["TX-6", "2024-07", "Co hydroxide", "Shipped", "COD", "", "10", "t", "0.2"],
        ["TX-7", "2024-07", "Co hydroxide", "Mined", "COD", "CHN", "10", "t", "0.2"],
        ["TX-8", "2024-07", "Co hydroxide", "Mined", "COD", "", "10", "t", ""],
        [
            "TX-9",
            "2024-07",
            '=HYPERLINK("http://evil.example","x")',
            "Mined",
            "COD",
            "",
            "10",
            "t",
            "0.2",
        ],
        ["TX-1", "2024-08", "Co hydroxide", "Mined", "COD", "", "10", "t", "0.2"],
        ["TX-11", "2024-07", "Co hydroxide", "Mined", "COD", "", "1,200", "t", "0.2"],
        ["", "2024-07", "Co hydroxide", "Mined", "COD", "", "10", "tons", "0.2"],
    ]
    path = write_csv(tmp_path / "bad.csv", rows)
    assert refuse(engine, path, mapping) == [
        (
            3,
            "commodity",
            "commodity 'Cobalt sulphate' is not a known code (allowed: cobalt, lithium, "
            "natural_graphite, nickel, rare_earths, tellurium, copper, manganese)",
        ),
        (4, "quantity", "quantity -5.0 is negative"),
        (
            5,
            "country",
            "country 'CD' is not an ISO 3166-1 alpha-3 code (use alpha-3, e.g. COD, not alpha-2)",
        ),
        (6, "period", "period '2024-13' is not a period (expected YYYY, YYYY-Qn or YYYY-MM)"),
        (7, "partner_country", "required for the export flow"),
        (8, "partner_country", "only import and export have one, not production"),
        (9, "grade", "grade is required when basis is gross"),
        (
            10,
            "commodity",
            "'=HYPERLINK(\"http://evil.example\",\"x\")' starts with '=', which a spreadsheet "
            "runs as a formula (formula injection); refused",
        ),
        (11, "record_id", "record_id 'TX-1' is also on row 2; every record needs its own id"),
        (
            12,
            "quantity",
            "'1,200' is not a number (write numbers with a '.' decimal point and no thousands "
            "separators)",
        ),
        (13, "record_id", "required, but the cell is empty"),
    ]


def test_problem_text_and_error_message(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    rows = [["TX-1", "2024-07", "Co hydroxide", "Mined", "COD", "", "-5", "t", "0.2"]]
    path = write_csv(tmp_path / "one.csv", rows)
    with pytest.raises(IngestError) as info:
        ingest_file(engine=engine, path=path, mapping=mapping)
    assert info.value.problems == [
        IngestProblem(file="one.csv", row=2, field="quantity", reason="quantity -5.0 is negative")
    ]
    assert str(info.value) == (
        "import refused, nothing was changed: 1 problem(s)\n"
        "  one.csv, row 2, field quantity: quantity -5.0 is negative"
    )


@pytest.mark.parametrize("cell", ["=1+1", "+cmd|' /C calc'!A0", "@SUM(A1:A9)", "\t=1+1", " =1"])
def test_formula_injection_is_refused(
    tmp_path: Path, engine: Engine, mapping: Mapping, cell: str
) -> None:
    rows = [["TX-1", "2024-07", "Co hydroxide", "Mined", cell, "", "1", "t", "0.2"]]
    start = cell.lstrip(" ")[:1]
    assert refuse(engine, write_csv(tmp_path / "f.csv", rows), mapping) == [
        (
            2,
            "country",
            f"{cell!r} starts with {start!r}, which a spreadsheet runs as a formula "
            "(formula injection); refused",
        )
    ]


def test_formula_like_number_in_numeric_field_goes_to_the_standard(
    tmp_path: Path, engine: Engine, mapping: Mapping
) -> None:
    rows = [["TX-1", "2024-07", "Co hydroxide", "Mined", "COD", "", "+1", "t", "=0.5"]]
    assert refuse(engine, write_csv(tmp_path / "f.csv", rows), mapping) == [
        (
            2,
            "grade",
            "'=0.5' starts with '=', which a spreadsheet runs as a formula "
            "(formula injection); refused",
        )
    ]


def test_bad_rows_in_xlsx_use_spreadsheet_row_numbers(tmp_path: Path, engine: Engine) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([])  # rows 1-2 left empty: the header is on row 3
    sheet.append([])
    sheet.append(HEADER)
    sheet.append(["TX-1", "2024-07", "Co hydroxide", "Mined", "COD", None, 10, "t", 0.2])
    sheet.append(["TX-2", "2024-07", "Co hydroxide", "Mined", "COD", None, -3, "t", 0.2])
    sheet.cell(row=6, column=1, value="TX-3")
    for column, value in enumerate(["2024-07", "Co hydroxide", "Mined", "COD", None, 3, "t"], 2):
        sheet.cell(row=6, column=column, value=value)
    sheet.cell(row=6, column=9, value=1.5)
    path = tmp_path / "acme.xlsx"
    workbook.save(path)
    assert refuse(engine, path, Mapping.model_validate(load_toml_mapping())) == [
        (5, "quantity", "quantity -3.0 is negative"),
        (6, "grade", "grade 1.5 is not a mass fraction in (0, 1]"),
    ]


def test_bad_rows_in_parquet_are_numbered_like_a_spreadsheet(
    tmp_path: Path, engine: Engine
) -> None:
    frame = pl.DataFrame(
        {
            "TxnRef": ["A", "B", "C"],
            "Month": ["2024-01", "2024-01", "January"],
            "Product": ["Co hydroxide"] * 3,
            "Movement": ["Mined"] * 3,
            "Site country": ["COD"] * 3,
            "Destination": [None, "CHN", None],
            "Qty": [1.0, 2.0, 3.0],
            "UoM": ["t"] * 3,
            "Co grade": [0.5] * 3,
        }
    )
    path = tmp_path / "acme.parquet"
    frame.write_parquet(path)
    assert refuse(engine, path, Mapping.model_validate(load_toml_mapping())) == [
        (3, "partner_country", "only import and export have one, not production"),
        (4, "period", "period 'January' is not a period (expected YYYY, YYYY-Qn or YYYY-MM)"),
    ]


# --------------------------------------------------------------------------- atomicity


def test_one_bad_row_changes_nothing(tmp_path: Path, any_engine: Engine, mapping: Mapping) -> None:
    first = ingest_file(
        engine=any_engine, path=write_csv(tmp_path / "june.csv", good_rows()), mapping=mapping
    )
    assert counts(any_engine) == (1, 3)
    before = stored(any_engine, "record_id", "import_id", "quantity_t")

    rows = [
        [f"TX-{n}", "2024-08", "Co hydroxide", "Mined", "COD", "", "5", "t", "0.5"]
        for n in range(10, 20)
    ]
    rows[7][6] = "-5"  # one bad row among ten
    path = write_csv(tmp_path / "july.csv", rows)
    assert refuse(any_engine, path, mapping) == [(9, "quantity", "quantity -5.0 is negative")]
    assert counts(any_engine) == (1, 3)
    assert stored(any_engine, "record_id", "import_id", "quantity_t") == before
    assert {row[1] for row in before} == {first.import_id}

    rows[7][6] = "5"  # fixed: now the whole file goes in
    path = write_csv(tmp_path / "july.csv", rows)
    report = ingest_file(engine=any_engine, path=path, mapping=mapping)
    assert report.rows_imported == 10
    assert counts(any_engine) == (2, 13)


def test_database_error_rolls_back_the_whole_import(
    tmp_path: Path, any_engine: Engine, mapping: Mapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another import stores TX-6 after this one checked its ids (a race): the INSERT of the
    # third batch fails, and the two batches already inserted and the import row go with it.
    monkeypatch.setattr(ingest_module, "_BATCH_ROWS", 2)
    with any_engine.begin() as conn:
        other = conn.execute(
            insert(IMPORTS).values(
                file_name="other.csv",
                sha256="0" * 64,
                mapping_sha256="0" * 64,
                row_count=1,
                imported_at=utcnow(),
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(RECORDS).values(
                import_id=other,
                record_id="TX-6",
                period="2024",
                year=2024,
                first_month=2024 * 12,
                last_month=2024 * 12 + 11,
                commodity="cobalt",
                stage="mining",
                flow="production",
                country="COD",
                quantity=1.0,
                unit="t",
                basis="contained",
                quantity_t=1.0,
                contribution_unit="record:TX-6",
            )
        )
    real_check = ingest_module._stored_before
    calls: list[int] = []

    def check_misses_the_race(*args: Any, **kwargs: Any) -> list[IngestProblem]:
        calls.append(1)
        return [] if len(calls) == 1 else real_check(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "_stored_before", check_misses_the_race)
    inserted: list[int] = []
    rows = [
        [f"TX-{n}", "2024-08", "Co hydroxide", "Mined", "COD", "", "5", "t", "0.5"]
        for n in range(1, 8)
    ]
    path = write_csv(tmp_path / "race.csv", rows)
    with pytest.raises(IngestError) as info:
        ingest_file(
            engine=any_engine,
            path=path,
            mapping=mapping,
            progress=lambda done, total: inserted.append(done) if done > total // 2 else None,
        )
    assert inserted == [9, 11]  # two batches (4 of 7 records) were inserted before the failure
    assert problems_of(info) == [
        (
            7,
            "record_id",
            f"record_id 'TX-6' was already imported from 'other.csv' (import {other}); "
            "every record needs its own id",
        )
    ]
    assert counts(any_engine) == (1, 1)
    assert stored(any_engine, "record_id") == [("TX-6",)]


def test_reimport_is_idempotent(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    path = write_csv(tmp_path / "acme.csv", good_rows())
    first = ingest_file(engine=engine, path=path, mapping=mapping)
    calls: list[tuple[int, int]] = []
    again = ingest_file(
        engine=engine, path=path, mapping=mapping, progress=lambda d, t: calls.append((d, t))
    )
    assert again == IngestReport(
        file_name="acme.csv",
        sha256=first.sha256,
        rows_imported=0,
        already_imported=True,
        import_id=first.import_id,
    )
    assert calls == []
    copy = tmp_path / "acme-copy.csv"  # same bytes under another name: the same file
    copy.write_bytes(path.read_bytes())
    assert ingest_file(engine=engine, path=copy, mapping=mapping).already_imported
    assert counts(engine) == (1, 3)


def test_record_id_imported_from_another_file(
    tmp_path: Path, engine: Engine, mapping: Mapping
) -> None:
    first = ingest_file(
        engine=engine, path=write_csv(tmp_path / "june.csv", good_rows()), mapping=mapping
    )
    rows = [
        ["TX-4", "2024-08", "Co hydroxide", "Mined", "COD", "", "5", "t", "0.5"],
        ["TX-2", "2024-08", "Co hydroxide", "Mined", "COD", "", "5", "t", "0.5"],
    ]
    assert refuse(engine, write_csv(tmp_path / "july.csv", rows), mapping) == [
        (
            3,
            "record_id",
            f"record_id 'TX-2' was already imported from 'june.csv' (import {first.import_id}); "
            "every record needs its own id",
        )
    ]


def test_progress_is_reported_in_steps(
    tmp_path: Path, engine: Engine, mapping: Mapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "_BATCH_ROWS", 4)
    rows = [
        [f"TX-{n}", "2024-08", "Co hydroxide", "Mined", "COD", "", "5", "t", "0.5"]
        for n in range(10)
    ]
    calls: list[tuple[int, int]] = []
    ingest_file(
        engine=engine,
        path=write_csv(tmp_path / "p.csv", rows),
        mapping=mapping,
        progress=lambda done, total: calls.append((done, total)),
    )
    # validated: rows 4 and 8, then all 10; stored: batches of 4, 4 and 2
    assert calls == [(4, 20), (8, 20), (10, 20), (14, 20), (18, 20), (20, 20)]


# --------------------------------------------------------------------------- unreadable files


def test_wrong_encoding(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    rows = [["TX-1", "2024-07", "Hidróxido", "Mined", "COD", "", "1", "t", "0.2"]]
    path = write_csv(tmp_path / "latin1.csv", rows, encoding="latin-1")
    offset = path.read_bytes().index(b"\xf3")
    assert refuse(engine, path, mapping) == [
        (
            None,
            None,
            f"not valid utf-8 at byte {offset} (line 2, byte 0xf3); set [file] encoding in the "
            'mapping to the encoding the file was saved in (e.g. "cp1252" for Excel on '
            'Windows, or "latin-1")',
        )
    ]


def test_truncated_parquet(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    path = tmp_path / "acme.parquet"
    pl.DataFrame({"TxnRef": ["A"] * 100, "Qty": [1.0] * 100}).write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert refuse(engine, path, mapping) == [
        (
            None,
            None,
            f"the Parquet file is truncated: it has {len(data) // 2} bytes and does not end "
            "with the footer marker 'PAR1' (copy or export the file again)",
        )
    ]


def test_csv_named_parquet(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    path = tmp_path / "acme.parquet"
    path.write_text("TxnRef,Qty\nA,1\n", encoding="utf-8")
    assert refuse(engine, path, mapping) == [
        (None, None, "not a Parquet file: it does not start with the marker 'PAR1'")
    ]


def test_truncated_xlsx(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(HEADER)
    path = tmp_path / "acme.xlsx"
    workbook.save(path)
    path.write_bytes(path.read_bytes()[:1000])
    assert refuse(engine, path, mapping) == [
        (
            None,
            None,
            "not a readable .xlsx workbook: an .xlsx file is a zip archive and this one is "
            "truncated or not a zip (File is not a zip file)",
        )
    ]


def test_missing_sheet(tmp_path: Path, engine: Engine) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "Shipments"
    path = tmp_path / "acme.xlsx"
    workbook.save(path)
    mapping = Mapping.model_validate({**load_toml_mapping(), "file": {"sheet": "Data"}})
    assert refuse(engine, path, mapping) == [
        (None, None, "the workbook has no sheet 'Data' (sheets: 'Shipments'); fix [file] sheet")
    ]


def test_missing_mapped_columns(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    header = [*HEADER]
    header[6] = "Quantity"
    header[8] = "co grade"
    path = write_csv(tmp_path / "acme.csv", good_rows(), header=header)
    columns = (
        "'TxnRef', 'Month', 'Product', 'Movement', 'Site country', 'Destination', "
        "'Quantity', 'UoM', 'co grade'"
    )
    assert refuse(engine, path, mapping) == [
        (
            None,
            "quantity",
            f"column 'Qty' named in the mapping is not in the file (columns: {columns})",
        ),
        (
            None,
            "grade",
            f"column 'Co grade' named in the mapping is not in the file (columns: {columns}); "
            "did you mean 'co grade'?",
        ),
    ]


def test_column_twice_in_header(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    header = [*HEADER[:-1], "Qty"]
    path = write_csv(tmp_path / "acme.csv", good_rows(), header=header)
    assert refuse(engine, path, mapping) == [
        (None, "quantity", "column 'Qty' appears 2 times in the header; rename the copies"),
        (
            None,
            "grade",
            "column 'Co grade' named in the mapping is not in the file (columns: 'TxnRef', "
            "'Month', 'Product', 'Movement', 'Site country', 'Destination', 'Qty', 'UoM', 'Qty')",
        ),
    ]


def test_empty_and_header_only_files(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert refuse(engine, empty, mapping) == [(None, None, "the file is empty")]
    header_only = write_csv(tmp_path / "header.csv", [])
    assert refuse(engine, header_only, mapping) == [
        (None, None, "the file has a header but no data rows")
    ]
    blank = tmp_path / "blank.csv"
    blank.write_text(",".join(HEADER) + "\n,,,,,,,,\n\n", encoding="utf-8")
    assert refuse(engine, blank, mapping) == [
        (None, None, "the file has no data rows: every row below the header is empty")
    ]


def test_ragged_csv_line(tmp_path: Path, engine: Engine, mapping: Mapping) -> None:
    path = tmp_path / "ragged.csv"
    lines = [",".join(HEADER)] + [",".join(row) for row in good_rows()]
    lines[2] += ",extra"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert refuse(engine, path, mapping) == [
        (
            None,
            None,
            "line 3 has 10 cells but the header has 9 columns (check [file] delimiter and the "
            "quoting of cells that contain ',')",
        )
    ]


def test_unknown_extension_and_missing_file(
    tmp_path: Path, engine: Engine, mapping: Mapping
) -> None:
    path = tmp_path / "acme.dat"
    path.write_text("x", encoding="utf-8")
    assert refuse(engine, path, mapping) == [
        (
            None,
            None,
            "cannot tell the file format from the extension '.dat'; "
            'set [file] format = "csv", "xlsx" or "parquet" in the mapping',
        )
    ]
    missing = tmp_path / "nowhere.csv"
    assert refuse(engine, missing, mapping) == [(None, None, f"file {missing} not found")]


def test_format_from_mapping_overrides_extension(
    tmp_path: Path, engine: Engine, mapping: Mapping
) -> None:
    path = write_csv(tmp_path / "acme.dat", good_rows())
    mapping = mapping.model_copy(update={"file": mapping.file.model_copy(update={"format": "csv"})})
    assert ingest_file(engine=engine, path=path, mapping=mapping).rows_imported == 3
