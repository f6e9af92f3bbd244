"""Bad files a company might feed its node: each is refused with a precise reason and
nothing is stored; a huge file imports in bounded time and memory.

tests/unit/node/test_ingest.py covers the common cases (latin-1 as UTF-8, truncated Parquet
and XLSX, formula injection in CSV, negative quantities, unknown codes); these are the
nastier variants.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import polars as pl
import pytest
from sqlalchemy import Engine, func, select

from node import IngestError, Mapping, create_schema, ingest_file, load_mapping, make_engine
from node._db import NodeTable

IMPORTS = NodeTable.metadata.tables["imports"]
RECORDS = NodeTable.metadata.tables["records"]
HEADER = ["Ref", "Month", "Product", "Movement", "Country", "Dest", "Qty", "UoM", "Grade"]
MAPPING = """\
[columns]
record_id = "Ref"
period = "Month"
commodity = "Product"
flow = "Movement"
country = "Country"
partner_country = "Dest"
quantity = "Qty"
unit = "UoM"
grade = "Grade"

[constants]
stage = "mining"
basis = "gross"

[values.commodity]
"Co hydroxide" = "cobalt"

[values.flow]
"Mined" = "production"
"Shipped" = "export"
"""
UTF8_HINT = ('; set [file] encoding in the mapping to the encoding the file was saved in '
             '(e.g. "cp1252" for Excel on Windows, or "latin-1")')


@pytest.fixture
def mapping(tmp_path: Path) -> Mapping:
    path = tmp_path / "mapping.toml"
    path.write_text(MAPPING, encoding="utf-8")
    return load_mapping(path)


@pytest.fixture
def engine(tmp_path: Path, mapping: Mapping) -> Iterator[Engine]:
    """A node database that already holds one good import (3 records)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    create_schema(engine=engine)
    good = _csv(tmp_path / "good.csv", [
        ["OK-1", "2024-01", "Co hydroxide", "Mined", "COD", "", "100", "t", "0.3"],
        ["OK-2", "2024-02", "Co hydroxide", "Shipped", "COD", "CHN", "50", "kg", "0.3"],
        ["OK-3", "2024-03", "Co hydroxide", "Mined", "ZMB", "", "7", "lb", "0.3"],
    ])
    ingest_file(engine=engine, path=good, mapping=mapping)
    yield engine
    engine.dispose()


def _csv(path: Path, rows: list[list[str]], *, encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(IMPORTS)).scalar_one(),
                conn.execute(select(func.count()).select_from(RECORDS)).scalar_one())


def _refused(engine: Engine, path: Path, mapping: Mapping) -> list[tuple[int | None,
                                                                         str | None, str]]:
    before = _counts(engine)
    with pytest.raises(IngestError) as info:
        ingest_file(engine=engine, path=path, mapping=mapping)
    assert _counts(engine) == before == (1, 3)
    assert {p.file for p in info.value.problems} == {path.name}
    return [(p.row, p.field, p.reason) for p in info.value.problems]


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(("name", "content", "byte"), [
    ("utf16.csv", ",".join(HEADER).encode("utf-16"), 0xFF),  # Excel's "Unicode text"
    ("image.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, 0x89),  # a picture, renamed
])
def test_a_file_in_another_encoding_is_refused_at_its_first_bad_byte(
    tmp_path: Path, engine: Engine, mapping: Mapping, name: str, content: bytes, byte: int,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert _refused(engine, path, mapping) == [
        (None, None, f"not valid utf-8 at byte 0 (line 1, byte 0x{byte:02x}){UTF8_HINT}")]


def test_invalid_utf8_deep_in_a_file_names_its_line(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    rows = [[f"R-{i}", "2024-01", "Co hydroxide", "Mined", "COD", "", "1", "t", "0.3"]
            for i in range(500)]
    data = bytearray(_csv(tmp_path / "x.csv", rows).read_bytes())
    offset = data.index(b"R-321,")
    data[offset] = 0xC3  # half of a two-byte character
    path = tmp_path / "x.csv"
    path.write_bytes(bytes(data))
    assert _refused(engine, path, mapping) == [
        (None, None, f"not valid utf-8 at byte {offset} (line 323, byte 0xc3){UTF8_HINT}")]


def test_a_nul_byte_inside_a_code_is_a_bad_code(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(",".join(HEADER).encode()
                     + b"\nR-1,2024-01,Co hydroxide,Mined,CO\x00D,,1,t,0.3\n")
    assert _refused(engine, path, mapping) == [
        (2, "country", "country 'CO\\x00D' is not an ISO 3166-1 alpha-3 code")]


# --------------------------------------------------------------------------- units and numbers


def test_mixed_units_in_one_column_are_each_converted(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    units = ["t", "KG", " lb ", "kt", "short_ton", "long_ton", "g", "tonnes"]
    rows = [[f"U-{i}", "2024-05", "Co hydroxide", "Mined", "COD", "", "2", unit, "0.5"]
            for i, unit in enumerate(units)]
    report = ingest_file(engine=engine, path=_csv(tmp_path / "units.csv", rows),
                         mapping=mapping)
    assert report.rows_imported == len(units)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(RECORDS.c.record_id, RECORDS.c.quantity_t).where(
            RECORDS.c.record_id.like("U-%"))).all())
    expected = [1.0, 1e-3, 0.45359237e-3, 1e3, 0.90718474, 1.0160469088, 1e-6, 1.0]
    assert [stored[f"U-{i}"] for i in range(len(units))] == pytest.approx(
        [2 * 0.5 * f for f in expected], rel=1e-12)


def test_unknown_units_and_non_numbers_are_each_reported(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    allowed = "t, tonne, tonnes, kg, g, kt, lb, short_ton, long_ton"
    cells = [("1", "MT"), ("2", "oz"), ("3", "m3"), ("100 kg", "t"), ("NaN", "t"),
             ("-0.5", "t"), ("5", "")]
    rows = [[f"B-{i}", "2024-07", "Co hydroxide", "Mined", "COD", "", q, u, "0.3"]
            for i, (q, u) in enumerate(cells)]
    assert _refused(engine, _csv(tmp_path / "mixed.csv", rows), mapping) == [
        (2, "unit", f"unit 'MT' is not a mass unit (allowed: {allowed})"),
        (3, "unit", f"unit 'oz' is not a mass unit (allowed: {allowed})"),
        (4, "unit", f"unit 'm3' is not a mass unit (allowed: {allowed})"),
        (5, "quantity", "'100 kg' is not a number (write numbers with a '.' decimal point "
                        "and no thousands separators)"),
        (6, "quantity", "quantity nan is not a finite number"),
        (7, "quantity", "quantity -0.5 is negative"),
        (8, "unit", "required for the production flow"),
    ]


# --------------------------------------------------------------------------- spreadsheets


def test_an_xlsx_text_cell_that_is_a_formula_is_refused(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(HEADER)
    sheet.append(["X-1", "2024-07", "Co hydroxide", "Mined", "COD", None, 10, "t", 0.3])
    cell = sheet.cell(row=2, column=5)
    cell.value = '=HYPERLINK("http://x.example","COD")'
    cell.data_type = "s"  # stored as text: a spreadsheet would run it once re-saved as CSV
    path = tmp_path / "inject.xlsx"
    workbook.save(path)
    assert _refused(engine, path, mapping) == [
        (2, "country", "'=HYPERLINK(\"http://x.example\",\"COD\")' starts with '=', which a "
                       "spreadsheet runs as a formula (formula injection); refused")]


def test_an_xlsx_formula_never_calculated_is_refused(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    # A workbook written by a program, never opened in Excel: the formula has no value.
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(HEADER)
    sheet.append(["X-1", "2024-07", "Co hydroxide", "Mined", "COD", None, "=2*500", "t", 0.3])
    path = tmp_path / "formula.xlsx"
    workbook.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "<f>2*500</f>" in archive.read("xl/worksheets/sheet1.xml").decode()
    assert _refused(engine, path, mapping) == [
        (2, "quantity", "required for the production flow")]


def test_an_xlsx_that_is_a_zip_of_something_else_is_refused(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    path = tmp_path / "notes.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a workbook")
    [(row, field, reason)] = _refused(engine, path, mapping)
    assert (row, field) == (None, None)
    assert reason.startswith("not a readable .xlsx workbook (damaged or truncated?): ")


# --------------------------------------------------------------------------- parquet


@pytest.mark.parametrize("where", ["middle", "footer"])
def test_a_parquet_file_damaged_inside_is_refused(
    tmp_path: Path, engine: Engine, mapping: Mapping, where: str,
) -> None:
    # Both markers are intact, so it is not "truncated": its bytes are damaged.
    path = tmp_path / "damaged.parquet"
    pl.DataFrame({h: [f"{h}-{i}" for i in range(200)] for h in HEADER}).write_parquet(path)
    data = bytearray(path.read_bytes())
    span = (range(len(data) // 2 - 40, len(data) // 2 + 40) if where == "middle"
            else range(len(data) - 60, len(data) - 8))
    for i in span:
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    [(row, field, reason)] = _refused(engine, path, mapping)
    assert (row, field) == (None, None)
    assert reason.startswith("the Parquet file is corrupt: ")


def test_a_parquet_file_with_nested_and_binary_columns_is_refused_row_by_row(
    tmp_path: Path, engine: Engine, mapping: Mapping,
) -> None:
    frame = pl.DataFrame({
        "Ref": ["P-1", "P-2"], "Month": ["2024-01", "2024-01"],
        "Product": ["Co hydroxide", "Co hydroxide"], "Movement": ["Mined", "Mined"],
        "Country": [["COD"], ["ZMB"]],  # a list where a code belongs
        "Dest": [None, None], "Qty": [b"\x00\x01", b"12"], "UoM": ["t", "t"],
        "Grade": [0.3, 0.3]})
    path = tmp_path / "nested.parquet"
    frame.write_parquet(path)
    problems = _refused(engine, path, mapping)
    assert {(row, field) for row, field, _ in problems} == {
        (2, "country"), (3, "country"), (2, "quantity")}


# --------------------------------------------------------------------------- a huge file

_HUGE = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from sqlalchemy import func, select
    from node import IngestError, create_schema, ingest_file, load_mapping, make_engine
    from node._db import NodeTable

    home = Path(sys.argv[1])
    engine = make_engine(f"sqlite:///{home / 'huge.db'}")
    create_schema(engine=engine)
    mapping = load_mapping(home / "mapping.toml")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        ingest_file(engine=engine, path=home / "bad.csv", mapping=mapping)
        refused = None
    except IngestError as exc:
        refused = [(p.row, p.field, p.reason) for p in exc.problems]
    middle = time.perf_counter()
    report = ingest_file(engine=engine, path=home / "huge.csv", mapping=mapping)
    end = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    records = NodeTable.metadata.tables["records"]
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(records)).scalar_one()
    print(json.dumps({"refused": refused, "bad_seconds": middle - start,
                      "good_seconds": end - middle, "rows": report.rows_imported,
                      "stored": stored, "growth_kib": peak - before}))
""")


def test_a_huge_file_imports_in_bounded_time_and_memory(tmp_path: Path) -> None:
    rows = 300_000
    (tmp_path / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    with (tmp_path / "huge.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow([f"H-{i:07d}", f"2024-{i % 12 + 1:02d}", "Co hydroxide",
                             "Shipped" if i % 3 == 0 else "Mined",
                             "COD" if i % 2 else "ZMB", "CHN" if i % 3 == 0 else "",
                             f"{(i % 997) + 0.5}", "t", "0.3"])
    data = (tmp_path / "huge.csv").read_bytes()
    start = data.index(b"\nH-0299990,") + 1  # data row 299,991: spreadsheet row 299,992
    line = data[start:data.index(b"\r\n", start)]
    cells = line.split(b",")
    quantity = cells[6].decode()
    cells[6] = b"-" + cells[6]
    (tmp_path / "bad.csv").write_bytes(data[:start] + b",".join(cells) + data[start + len(line):])
    done = subprocess.run([sys.executable, "-c", _HUGE, str(tmp_path)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["refused"] == [[299_992, "quantity", f"quantity -{quantity} is negative"]]
    assert (result["rows"], result["stored"]) == (rows, rows)
    # Generous bounds: about 15 s and 300 MB on the 2-core reference machine.
    assert result["bad_seconds"] < 120 and result["good_seconds"] < 180
    assert result["growth_kib"] < 1.5 * 1024 * 1024  # RSS growth below 1.5 GiB


# --------------------------------------------------------------------------- zip bombs

_BOMB = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc
    from pathlib import Path
    from sqlalchemy import func, select
    from node import IngestError, create_schema, ingest_file, load_mapping, make_engine
    from node._db import NodeTable

    home = Path(sys.argv[1])
    engine = make_engine(f"sqlite:///{home / 'bomb.db'}")
    create_schema(engine=engine)
    mapping = load_mapping(home / "mapping.toml")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    try:
        ingest_file(engine=engine, path=home / sys.argv[2], mapping=mapping)
        refused = None
    except IngestError as exc:
        refused = [(p.file, p.row, p.field, p.reason) for p in exc.problems]
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    tables = NodeTable.metadata.tables
    with engine.connect() as conn:
        stored = [conn.execute(select(func.count()).select_from(tables[t])).scalar_one()
                  for t in ("imports", "records")]
    print(json.dumps({"refused": refused, "seconds": seconds, "traced_peak": traced_peak,
                      "rss_growth_kib": growth, "stored": stored}))
""")

_ROW = ('<row><c t="inlineStr"><is><t>Z-1</t></is></c><c t="inlineStr"><is><t>2024-01</t>'
        '</is></c><c t="inlineStr"><is><t>Co hydroxide</t></is></c><c t="inlineStr"><is><t>'
        'Mined</t></is></c><c t="inlineStr"><is><t>COD</t></is></c><c/><c><v>1</v></c>'
        '<c t="inlineStr"><is><t>t</t></is></c><c><v>0.3</v></c>'
        + '<c><v>0</v></c>' * 500 + '</row>')


def _bomb(path: Path, sheet_bytes: int) -> tuple[int, int]:
    """A workbook whose sheet XML inflates to ``sheet_bytes`` of one row repeated.

    Returns (compressed size of the sheet member, its inflated size).
    """
    workbook = openpyxl.Workbook()
    workbook.active.append(HEADER)
    template = path.with_suffix(".template.xlsx")
    workbook.save(template)
    row = _ROW.encode()  # the same row of 509 cells again and again: it compresses ~400 times
    head = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns='
            b'"http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            b'<row r="1">' + b"".join(
                f'<c r="{chr(65 + i)}1" t="inlineStr"><is><t>{h}</t></is></c>'.encode()
                for i, h in enumerate(HEADER)) + b"</row>")
    tail = b"</sheetData></worksheet>"
    chunk = row * (4 * 2**20 // len(row))
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(
            path, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if item.filename != "xl/worksheets/sheet1.xml":
                target.writestr(item, source.read(item.filename))
                continue
            with target.open(item.filename, "w", force_zip64=True) as member:
                member.write(head)
                written = len(head)
                while written + len(chunk) < sheet_bytes:
                    member.write(chunk)
                    written += len(chunk)
                member.write(tail)
    template.unlink()
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
        return info.compress_size, info.file_size


def _run_bomb(tmp_path: Path, name: str) -> dict[str, object]:
    (tmp_path / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    # Without the guard this takes minutes and gigabytes: the timeout fails the test.
    done = subprocess.run([sys.executable, "-c", _BOMB, str(tmp_path), name],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_an_xlsx_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    from node._ingest import MAX_XLSX_COMPRESSION_RATIO

    path = tmp_path / "bomb.xlsx"
    compressed, inflated = _bomb(path, 300 * 2**20)
    assert path.stat().st_size < 2**20 and inflated > 299 * 2**20
    result = _run_bomb(tmp_path, path.name)
    ratio = inflated / compressed
    assert result["refused"] == [[
        "bomb.xlsx", None, None,
        f"refused as a possible zip bomb: member 'xl/worksheets/sheet1.xml' of the .xlsx "
        f"archive expands {ratio:,.0f} times ({compressed / 2**20:,.1f} MiB to "
        f"{inflated / 2**20:,.1f} MiB; at most {MAX_XLSX_COMPRESSION_RATIO} times allowed "
        "for members over 1 MiB)"]]
    assert result["stored"] == [0, 0]  # atomic: no import, no record
    # Nothing was inflated: Python allocations peak below 16 MiB (the file is < 1 MiB; the
    # sheet would inflate to 300 MiB of XML and millions of cells), and so does RSS growth.
    assert isinstance(result["traced_peak"], int) and result["traced_peak"] < 16 * 2**20
    assert isinstance(result["rss_growth_kib"], int) and result["rss_growth_kib"] < 64 * 1024
    assert isinstance(result["seconds"], float) and result["seconds"] < 5
    print(f"zip bomb: {path.stat().st_size:,} bytes -> {inflated:,} bytes; refused in "
          f"{result['seconds']:.3f} s, traced peak {result['traced_peak']:,} bytes, "
          f"RSS growth {result['rss_growth_kib']:,} KiB")


def test_an_xlsx_that_would_inflate_past_the_total_limit_is_refused(
    tmp_path: Path, engine: Engine, mapping: Mapping, monkeypatch: pytest.MonkeyPatch,
) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(HEADER)
    for i in range(200):
        sheet.append([f"T-{i}", "2024-07", "Co hydroxide", "Mined", "COD", None, i, "t", 0.3])
    path = tmp_path / "big.xlsx"
    workbook.save(path)
    with zipfile.ZipFile(path) as archive:
        total = sum(info.file_size for info in archive.infolist())
    monkeypatch.setattr("node._ingest.MAX_XLSX_UNCOMPRESSED_BYTES", total - 1)
    assert _refused(engine, path, mapping) == [(
        None, None, f"refused as a possible zip bomb: the .xlsx archive would expand to "
                    f"{total / 2**20:,.1f} MiB (at most {(total - 1) / 2**20:,.1f} MiB "
                    "allowed); split the data into several files or export it as CSV or "
                    "Parquet")]
    monkeypatch.setattr("node._ingest.MAX_XLSX_UNCOMPRESSED_BYTES", total)
    assert ingest_file(engine=engine, path=path, mapping=mapping).rows_imported == 200


def test_a_real_sized_workbook_passes_the_zip_bomb_guard(tmp_path: Path) -> None:
    # Realistic, repetitive data (as an ERP export): well under the ratio limit.
    from node._ingest import MAX_XLSX_COMPRESSION_RATIO, _check_zip_sizes

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(HEADER)
    for i in range(30_000):
        sheet.append([f"KC-24-{i:06d}", f"2024-{i % 12 + 1:02d}", "Co hydroxide",
                      "Shipped" if i % 3 == 0 else "Mined", "COD",
                      "CHN" if i % 3 == 0 else None, (i % 997) + 0.5, "t", 0.3])
    path = tmp_path / "erp.xlsx"
    workbook.save(path)
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    _check_zip_sizes(members, path.name)  # raises IngestError if refused
    ratios = [i.file_size / i.compress_size for i in members if i.file_size > 2**20]
    assert ratios and max(ratios) < MAX_XLSX_COMPRESSION_RATIO / 3
