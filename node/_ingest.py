"""Importing a company's file: read it, map every row onto the standard, store all or nothing.

``ingest_file`` reads a CSV, XLSX or Parquet file through a :class:`~node._mapping.Mapping`,
validates every row as a :class:`protocols.ReportingRecord` and stores the records with their
normalised quantities and prices (see docs/ingest.md). The guarantees:

* **every problem is reported**: all bad rows of the file (row, field, reason), not the first;
* **atomic**: if anything is wrong, :class:`~node._errors.IngestError` is raised and the
  database is unchanged; otherwise the import and all its records are stored in one
  transaction, which any database error rolls back as a whole;
* **idempotent**: a file whose SHA-256 was imported before is not imported again.

Rows are numbered as a person sees them in a spreadsheet or text editor: the header is row 1
and the first data row is row 2 (an XLSX sheet whose header is lower down counts from there;
Parquet files follow the same convention). Rows whose cells are all empty are skipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
from pydantic import ValidationError
from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.exc import IntegrityError

from node._db import NodeTable, utcnow
from node._errors import IngestError, IngestProblem
from node._ingest_log import AttemptRecorder
from node._mapping import STANDARD_FIELDS, Mapping
from protocols import ReportingRecord, parse_period

__all__ = [
    "MAX_XLSX_COMPRESSION_RATIO",
    "MAX_XLSX_MEMBERS",
    "MAX_XLSX_UNCOMPRESSED_BYTES",
    "IngestReport",
    "ingest_file",
]

#: Records per INSERT batch (and rows between progress reports).
_BATCH_ROWS = 5_000
#: Record ids per ``IN (...)`` lookup of ids stored by earlier imports.
_LOOKUP_CHUNK = 900
#: Text that a spreadsheet would run as a formula when the cell starts with it.
_FORMULA_STARTS = ("=", "+", "@", "\t", "\r")
#: Fields where a cell such as ``+5`` or ``-5`` is a number, not a formula.
_NUMERIC_FIELDS = frozenset({"quantity", "grade", "price"})
_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: Zip-bomb guard for XLSX files (an .xlsx is a zip archive), checked on the archive's central
#: directory before any member is inflated (docs/ingest.md, "Size"): the total size of all
#: members once inflated ...
MAX_XLSX_UNCOMPRESSED_BYTES = 1024 * 2**20
#: ... how many times larger than its compressed bytes one member may inflate (for members
#: over 1 MiB; real worksheets compress 5 to 30 times, a bomb of repeated cells 1,000 times) ...
MAX_XLSX_COMPRESSION_RATIO = 100
#: ... and how many members the archive may have.
MAX_XLSX_MEMBERS = 10_000
_RATIO_CHECK_FROM_BYTES = 2**20
#: A date with a time of day, as spreadsheets write dates: only its date counts for a period.
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")
_FIELD_PREFIX = re.compile(r"^([a-z_]+): (.*)$", re.DOTALL)

#: What is stored per record (besides ``id`` and ``import_id``), in this order.
_STORED_SCHEMA: dict[str, Any] = {
    "record_id": pl.String,
    "period": pl.String,
    "year": pl.Int64,
    "first_month": pl.Int64,
    "last_month": pl.Int64,
    "commodity": pl.String,
    "stage": pl.String,
    "flow": pl.String,
    "country": pl.String,
    "partner_country": pl.String,
    "quantity": pl.Float64,
    "unit": pl.String,
    "basis": pl.String,
    "grade": pl.Float64,
    "price": pl.Float64,
    "price_unit": pl.String,
    "contract_type": pl.String,
    "site_id": pl.String,
    "contract_id": pl.String,
    "quantity_t": pl.Float64,
    "price_usd_t": pl.Float64,
    "contribution_unit": pl.String,
}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IngestReport:
    """The outcome of :func:`ingest_file`.

    ``already_imported`` is true when the same file (same SHA-256) was imported before; then
    ``rows_imported`` is 0 and ``import_id`` is the earlier import's id.
    """

    file_name: str
    sha256: str
    rows_imported: int
    already_imported: bool
    import_id: int


@dataclass
class _Table:
    """A file as read: its cells, its header as written and the row number of its first row."""

    frame: pl.DataFrame
    header: list[str]
    first_row: int = 2


def _tables() -> tuple[Table, Table]:
    tables = NodeTable.metadata.tables
    return tables["imports"], tables["records"]


def _file_error(file: str, reason: str, field: str | None = None) -> IngestError:
    return IngestError([IngestProblem(file=file, row=None, field=field, reason=reason)])


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- reading files


def _read_bytes(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _file_error(name, f"file {path} not found") from None
    except IsADirectoryError:
        raise _file_error(name, f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise _file_error(name, f"cannot be read: {exc.strerror or exc}") from exc


def _file_format(path: Path, mapping: Mapping, name: str) -> str:
    if mapping.file.format is not None:
        return mapping.file.format
    suffix = path.suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if suffix == ".xls":
        raise _file_error(
            name, "old Excel 97-2003 (.xls) workbooks are not supported; save it as .xlsx"
        )
    raise _file_error(
        name,
        f"cannot tell the file format from the extension {suffix or '(none)'!r}; "
        'set [file] format = "csv", "xlsx" or "parquet" in the mapping',
    )


def _decode_csv(raw: bytes, name: str, encoding: str) -> bytes:
    """The file as UTF-8 bytes without a byte-order mark; refuses bytes invalid in ``encoding``."""
    try:
        text = raw.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _file_error(
            name,
            f"not valid {encoding} at byte {exc.start} (line {line}, byte "
            f"0x{raw[exc.start]:02x}); set [file] encoding in the mapping to the encoding the "
            'file was saved in (e.g. "cp1252" for Excel on Windows, or "latin-1")',
        ) from None
    if encoding.startswith("utf-8"):
        return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    return text.encode("utf-8")


def _csv_diagnosis(data: bytes, delimiter: str) -> str | None:
    """Where a CSV file breaks (polars does not say which line), found with the csv module."""
    reader = csv.reader(
        io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter, strict=True
    )
    try:
        header = next(reader)
        for cells in reader:
            if len(cells) > len(header):
                return (
                    f"line {reader.line_num} has {len(cells)} cells but the header has "
                    f"{len(header)} columns (check [file] delimiter and the quoting of cells "
                    f"that contain {delimiter!r})"
                )
    except csv.Error as exc:
        return (
            f"cannot be read as CSV at line {reader.line_num}: {exc} "
            '(is a quote " opened and never closed?)'
        )
    return None


def _read_csv(raw: bytes, name: str, mapping: Mapping, suffix: str) -> _Table:
    if not raw.strip():
        raise _file_error(name, "the file is empty")
    data = _decode_csv(raw, name, mapping.file.encoding)
    delimiter = mapping.file.delimiter or ("\t" if suffix == ".tsv" else ",")
    try:
        header = pl.read_csv(
            io.BytesIO(data), has_header=False, n_rows=1, infer_schema=False, separator=delimiter
        ).row(0)
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False, separator=delimiter)
    except pl.exceptions.NoDataError:
        raise _file_error(name, "the file is empty") from None
    except pl.exceptions.PolarsError as exc:
        reason = _csv_diagnosis(data, delimiter) or f"cannot be read as CSV: {_first_line(exc)}"
        raise _file_error(name, reason) from exc
    return _Table(frame, ["" if cell is None else str(cell) for cell in header])


def _xlsx_header(raw: bytes, sheet: str | None, name: str) -> tuple[str, int, list[str]]:
    """The sheet to read, the row number of its header and the header's cells."""
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
        raise _file_error(
            name, f"not a readable .xlsx workbook (damaged or truncated?): {_first_line(exc)}"
        ) from exc
    try:
        if sheet is not None and sheet not in workbook.sheetnames:
            raise _file_error(
                name,
                f"the workbook has no sheet {sheet!r} (sheets: "
                f"{', '.join(repr(s) for s in workbook.sheetnames)}); fix [file] sheet",
            )
        title = sheet if sheet is not None else workbook.sheetnames[0]
        for number, cells in enumerate(workbook[title].iter_rows(values_only=True), start=1):
            if any(cell is not None for cell in cells):
                return title, number, ["" if cell is None else str(cell) for cell in cells]
        raise _file_error(name, f"the sheet {title!r} is empty")
    finally:
        workbook.close()


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _check_zip_sizes(members: Sequence[zipfile.ZipInfo], name: str) -> None:
    """Refuse a zip bomb from the archive's central directory, before anything is inflated.

    The sizes are the ones the archive declares; :mod:`zipfile` (which openpyxl reads
    through) never inflates a member past its declared size, so they bound the memory used.
    """
    if len(members) > MAX_XLSX_MEMBERS:
        raise _file_error(
            name,
            f"refused as a possible zip bomb: the .xlsx archive has {len(members):,} members "
            f"(at most {MAX_XLSX_MEMBERS:,} allowed)",
        )
    total = sum(member.file_size for member in members)
    if total > MAX_XLSX_UNCOMPRESSED_BYTES:
        raise _file_error(
            name,
            f"refused as a possible zip bomb: the .xlsx archive would expand to "
            f"{_mib(total)} (at most {_mib(MAX_XLSX_UNCOMPRESSED_BYTES)} allowed); split the "
            "data into several files or export it as CSV or Parquet",
        )
    for member in members:
        if member.file_size <= _RATIO_CHECK_FROM_BYTES:
            continue
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > MAX_XLSX_COMPRESSION_RATIO:
            raise _file_error(
                name,
                f"refused as a possible zip bomb: member {member.filename!r} of the .xlsx "
                f"archive expands {ratio:,.0f} times ({_mib(member.compress_size)} to "
                f"{_mib(member.file_size)}; at most {MAX_XLSX_COMPRESSION_RATIO} times "
                "allowed for members over 1 MiB)",
            )


def _read_xlsx(raw: bytes, name: str, mapping: Mapping) -> _Table:
    if not raw:
        raise _file_error(name, "the file is empty")
    if raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise _file_error(
            name,
            "this is an old Excel 97-2003 (.xls) or a password-protected workbook; "
            "save it as an unprotected .xlsx",
        )
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise _file_error(
            name,
            f"not a readable .xlsx workbook: an .xlsx file is a zip archive and this one is "
            f"truncated or not a zip ({exc})",
        ) from None
    _check_zip_sizes(members, name)
    title, header_row, header = _xlsx_header(raw, mapping.file.sheet, name)
    try:
        frame = pl.read_excel(
            io.BytesIO(raw),
            engine="openpyxl",
            engine_options={"read_only": True},
            sheet_name=title,
            infer_schema_length=0,  # every cell as text, as in a CSV file
            drop_empty_rows=False,  # keep row numbers
            drop_empty_cols=False,  # a mapped column may be empty in this file
            raise_if_empty=False,
        )
    except Exception as exc:  # openpyxl and polars raise many kinds for a damaged workbook
        raise _file_error(name, f"sheet {title!r} cannot be read: {_first_line(exc)}") from exc
    return _Table(frame, header, first_row=header_row + 1)


def _read_parquet(raw: bytes, name: str) -> _Table:
    if not raw:
        raise _file_error(name, "the file is empty")
    if not raw.startswith(b"PAR1"):
        raise _file_error(name, "not a Parquet file: it does not start with the marker 'PAR1'")
    if len(raw) < 12 or not raw.endswith(b"PAR1"):
        raise _file_error(
            name,
            f"the Parquet file is truncated: it has {len(raw)} bytes and does not end with "
            "the footer marker 'PAR1' (copy or export the file again)",
        )
    try:
        frame = pl.read_parquet(io.BytesIO(raw))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise _file_error(name, f"the Parquet file is corrupt: {_first_line(exc)}") from exc
    return _Table(frame, list(frame.columns))


def _read_table(path: Path, raw: bytes, name: str, mapping: Mapping) -> _Table:
    kind = _file_format(path, mapping, name)
    if kind == "csv":
        table = _read_csv(raw, name, mapping, path.suffix.lower())
    elif kind == "xlsx":
        table = _read_xlsx(raw, name, mapping)
    else:
        table = _read_parquet(raw, name)
    if table.frame.height == 0:
        raise _file_error(name, "the file has a header but no data rows")
    return table


# --------------------------------------------------------------------------- cells


def _text_series(series: pl.Series) -> pl.Series:
    """A column's cells as text (null when empty), whatever type the file stored them as.

    Whole numbers stored as floats lose their ``.0`` (an id ``1001`` read as ``1001.0`` is
    still ``1001``); dates with a time of day keep their date.
    """
    dtype = series.dtype
    if dtype == pl.String:
        return series
    if dtype.is_float():
        whole = pl.col("v").is_finite() & (pl.col("v") == pl.col("v").floor())
        whole = whole & (pl.col("v").abs() < 2.0**53)
        text = pl.when(whole).then(pl.col("v").cast(pl.Int64).cast(pl.String))
        frame = pl.DataFrame({"v": series.fill_nan(None)})  # NaN is an empty cell
        return frame.select(text.otherwise(pl.col("v").cast(pl.String))).to_series()
    if dtype == pl.Datetime:
        return series.dt.date().cast(pl.String)
    try:
        return series.cast(pl.String)
    except pl.exceptions.PolarsError:  # nested types: as Python shows them (the standard refuses)
        values = [None if value is None else str(value) for value in series.to_list()]
        return pl.Series(series.name, values, dtype=pl.String)


def _column_list(header: Sequence[str]) -> str:
    shown = ", ".join(repr(column) for column in header[:30])
    return shown + (f", ... ({len(header) - 30} more)" if len(header) > 30 else "")


def _mapped_cells(table: _Table, name: str, mapping: Mapping) -> pl.DataFrame:
    """The mapped columns as text, one column per standard field.

    Refuses (file-level problems) columns that the file lacks or has more than once.
    """
    problems = []
    for field, column in mapping.columns.items():
        count = table.header.count(column)
        if count == 0:
            near = [c for c in table.header if c.strip().lower() == column.strip().lower()]
            hint = f"; did you mean {near[0]!r}?" if near else ""
            problems.append(
                IngestProblem(
                    name,
                    None,
                    field,
                    f"column {column!r} named in the mapping is not in the file "
                    f"(columns: {_column_list(table.header)}){hint}",
                )
            )
        elif count > 1:
            problems.append(
                IngestProblem(
                    name,
                    None,
                    field,
                    f"column {column!r} appears {count} times in the header; rename the copies",
                )
            )
        elif column not in table.frame.columns:  # a header cell polars names differently
            problems.append(
                IngestProblem(name, None, field, f"column {column!r} cannot be read; rename it")
            )
    if problems:
        raise IngestError(problems)
    return pl.DataFrame(
        [
            _text_series(table.frame.get_column(column)).alias(field)
            for field, column in mapping.columns.items()
        ]
    )


def _blank_rows(frame: pl.DataFrame) -> set[int]:
    """Indexes of the rows whose every cell is empty (skipped, as a spreadsheet shows them)."""
    blank: pl.Series | None = None
    for series in frame.get_columns():
        empty = series.is_null()
        if series.dtype == pl.String:
            empty = empty | (series.str.strip_chars() == "")
        blank = empty if blank is None else blank & empty
    return set() if blank is None else set(blank.arg_true().to_list())


@dataclass
class _Ids:
    """Where each record id of a file is: its first row, and the rows that repeat one."""

    first: pl.DataFrame  # columns id, index: every distinct id and the index of its first row
    repeats: dict[int, int]  # index of a row repeating an id -> index of the id's first row


def _record_ids(cells: pl.DataFrame) -> _Ids:
    ids = pl.DataFrame(
        {
            "id": cells.get_column("record_id").str.strip_chars(),
            "index": pl.int_range(0, cells.height, eager=True),
        }
    ).filter(pl.col("id").is_not_null() & (pl.col("id") != ""))
    ids = ids.with_columns(first=pl.col("index").min().over("id"))
    repeats = ids.filter(pl.col("index") != pl.col("first")).select("index", "first")
    return _Ids(
        first=ids.filter(pl.col("index") == pl.col("first")).select("id", "index"),
        repeats=dict(repeats.iter_rows()),
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _formula_reason(value: str) -> str:
    start = value.lstrip(" ")[:1]
    return (
        f"{_short(value)} starts with {start!r}, which a spreadsheet runs as a formula "
        "(formula injection); refused"
    )


# --------------------------------------------------------------------------- validation


def _problem_field(message: str) -> tuple[str | None, str]:
    """The field a record-level message is about (``"partner_country: required..."``)."""
    match = _FIELD_PREFIX.match(message)
    if match is not None and match[1] in STANDARD_FIELDS:
        return match[1], match[2]
    words = message.split(" ", 2)
    if len(words) > 1 and f"{words[0]}_{words[1]}" in STANDARD_FIELDS:  # "price unit 'x' ..."
        return f"{words[0]}_{words[1]}", message
    if words[0] in STANDARD_FIELDS:  # "quantity -5.0 is negative"
        return words[0], message
    return None, message


def _explain(exc: ValidationError) -> Iterable[tuple[str | None, str]]:
    """(field, human-readable reason) for each error pydantic found in a row."""
    for err in exc.errors(include_url=False, include_context=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:
            yield _problem_field(message)
            continue
        field, kind, value = str(err["loc"][0]), err["type"], err.get("input")
        if kind == "missing":
            reason = "required, but the cell is empty"
        elif kind in ("float_parsing", "float_type"):
            reason = (
                f"{_short(value)} is not a number (write numbers with a '.' decimal point "
                "and no thousands separators)"
            )
        elif kind == "string_pattern_mismatch":
            reason = (
                f"{_short(value)} is not a valid id: use only letters, digits and . : / # @ + - "
                "(no spaces)"
            )
        elif kind == "string_too_long":
            reason = f"{_short(value)} is longer than 128 characters"
        elif kind == "value_error":
            reason = message
        else:
            reason = f"{message} (the cell holds {_short(value)})"
        yield field, reason


def _stored_values(
    record: ReportingRecord, periods: dict[str, tuple[int, int, int]]
) -> tuple[Any, ...]:
    """A valid record as the values of :data:`_STORED_SCHEMA`, normalised.

    ``periods`` caches (year, first month, last month) by period: a file has few periods.
    """
    months = periods.get(record.period)
    if months is None:
        period = parse_period(record.period)
        months = periods[record.period] = (period.year, *period.month_index)
    return (
        record.record_id,
        record.period,
        *months,
        record.commodity.value,
        record.stage.value,
        record.flow.value,
        record.country,
        record.partner_country,
        record.quantity,
        record.unit,
        None if record.basis is None else record.basis.value,
        record.grade,
        record.price,
        record.price_unit,
        None if record.contract_type is None else record.contract_type.value,
        record.site_id,
        record.contract_id,
        record.quantity_t,
        record.price_usd_t,
        record.contribution_unit,
    )


def _batch_frame(pending: list[tuple[Any, ...]]) -> pl.DataFrame:
    """Normalised records, kept compactly until the whole file is known to be valid."""
    columns = zip(*pending, strict=True)
    return pl.DataFrame(
        [
            pl.Series(name, values, dtype=dtype)
            for (name, dtype), values in zip(_STORED_SCHEMA.items(), columns, strict=True)
        ]
    )


@dataclass
class _Checked:
    """The outcome of validating a file: its records in batches, or its problems."""

    batches: list[pl.DataFrame]
    problems: list[IngestProblem]
    count: int  # valid records


def _row_data(
    row_cells: tuple[str | None, ...],
    plan: list[tuple[str, dict[str, str] | None, bool, bool]],
    constants: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    """The record's input for one row, and the fields refused as formulas (with the reason)."""
    data = dict(constants)
    refused: dict[str, str] = {}
    for (field, table, numeric, is_period), value in zip(plan, row_cells, strict=True):
        if value is None:
            continue
        text = value.strip()
        if not text:
            continue
        if table is not None and text in table:  # translated: the mapping knows this value
            text = table[text].strip()
        elif (value[:1] in _FORMULA_STARTS or text[:1] in _FORMULA_STARTS) and not (
            numeric and _is_number(text)
        ):
            refused[field] = _formula_reason(value)
            continue
        if is_period and (match := _DATETIME.match(text)) is not None:
            text = match[1]
        if text:
            data[field] = text
    return data, refused


def _validate(
    cells: pl.DataFrame,
    *,
    skip: set[int],
    repeats: dict[int, int],
    first_row: int,
    mapping: Mapping,
    name: str,
    progress: Progress | None,
) -> _Checked:
    """Validate every row; keep the normalised records (in batches) while no row is bad."""
    plan = [
        (field, mapping.values.get(field), field in _NUMERIC_FIELDS, field == "period")
        for field in cells.columns
    ]
    constants = dict(mapping.constants)
    id_position = cells.columns.index("record_id")
    total = 2 * cells.height
    problems: list[IngestProblem] = []
    batches: list[pl.DataFrame] = []
    pending: list[tuple[Any, ...]] = []
    periods: dict[str, tuple[int, int, int]] = {}
    count = 0
    for index, row_cells in enumerate(cells.iter_rows()):
        if progress is not None and index and index % _BATCH_ROWS == 0:
            progress(index, total)
        if index in skip:
            continue
        row = first_row + index
        data, refused = _row_data(row_cells, plan, constants)
        problems.extend(IngestProblem(name, row, field, why) for field, why in refused.items())
        if index in repeats:
            problems.append(
                IngestProblem(
                    name,
                    row,
                    "record_id",
                    f"record_id {_short(str(row_cells[id_position]).strip())} is also on row "
                    f"{first_row + repeats[index]}; every record needs its own id",
                )
            )
        try:
            record = ReportingRecord.model_validate(data)
        except ValidationError as exc:
            problems.extend(
                IngestProblem(name, row, field, reason)
                for field, reason in _explain(exc)
                if field not in refused
            )
            continue
        count += 1
        if problems:  # the file is refused: keep checking rows, but stop keeping records
            batches, pending = [], []
            continue
        pending.append(_stored_values(record, periods))
        if len(pending) >= _BATCH_ROWS:
            batches.append(_batch_frame(pending))
            pending = []
    if pending and not problems:
        batches.append(_batch_frame(pending))
    if progress is not None:
        progress(cells.height, total)
    return _Checked(batches, problems, count)


# --------------------------------------------------------------------------- database


def _earlier_import(engine: Engine, sha256: str) -> int | None:
    imports, _ = _tables()
    with engine.connect() as conn:
        found = conn.execute(select(imports.c.id).where(imports.c.sha256 == sha256))
        return found.scalar_one_or_none()


def _stored_before(
    engine: Engine, first: pl.DataFrame, *, first_row: int, name: str
) -> list[IngestProblem]:
    """A problem for each record id of the file that an earlier import already stored."""
    imports, records = _tables()
    problems = []
    with engine.connect() as conn:
        for chunk in first.iter_slices(_LOOKUP_CHUNK):
            index_of = dict(chunk.iter_rows())
            found = conn.execute(
                select(records.c.record_id, imports.c.file_name, imports.c.id)
                .join(imports, records.c.import_id == imports.c.id)
                .where(records.c.record_id.in_(list(index_of)))
            )
            for record_id, file_name, import_id in found:
                problems.append(
                    IngestProblem(
                        name,
                        first_row + index_of[record_id],
                        "record_id",
                        f"record_id {_short(record_id)} was already imported from "
                        f"{file_name!r} (import {import_id}); every record needs its own id",
                    )
                )
    return problems


def _store(
    engine: Engine,
    *,
    name: str,
    sha256: str,
    mapping: Mapping,
    checked: _Checked,
    progress: Progress | None,
    rows: int,
) -> int:
    """Insert the import and all its records in one transaction; return the import's id."""
    imports, records = _tables()
    batches = checked.batches[::-1]
    checked.batches = []
    with engine.begin() as conn:
        result = conn.execute(
            insert(imports).values(
                file_name=name,
                sha256=sha256,
                mapping_sha256=mapping.mapping_sha256,
                row_count=checked.count,
                imported_at=utcnow(),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        import_id = int(key[0])
        inserted = 0
        while batches:
            batch = batches.pop().with_columns(pl.lit(import_id).alias("import_id"))
            conn.execute(insert(records), list(batch.iter_rows(named=True)))
            inserted += batch.height
            if progress is not None:
                progress(rows + rows * inserted // checked.count, 2 * rows)
    return import_id


def _ingest(
    *,
    engine: Engine,
    path: Path,
    mapping: Mapping,
    progress: Progress | None,
    attempt: AttemptRecorder,
) -> IngestReport:
    """The import itself (see :func:`ingest_file`); tells ``attempt`` what it learns."""
    name = path.name
    raw = _read_bytes(path, name)
    sha256 = hashlib.sha256(raw).hexdigest()
    attempt.sha256 = sha256
    earlier = _earlier_import(engine, sha256)
    if earlier is not None:
        return IngestReport(name, sha256, 0, True, earlier)

    table = _read_table(path, raw, name, mapping)
    del raw
    cells = _mapped_cells(table, name, mapping)
    skip = _blank_rows(table.frame)
    first_row = table.first_row
    del table  # the mapped columns (as text) are all that is needed from here
    if len(skip) == cells.height:
        raise _file_error(name, "the file has no data rows: every row below the header is empty")

    ids = _record_ids(cells)
    checked = _validate(
        cells,
        skip=skip,
        repeats=ids.repeats,
        first_row=first_row,
        mapping=mapping,
        name=name,
        progress=progress,
    )
    rows = cells.height
    attempt.row_count = rows - len(skip)
    del cells
    problems = checked.problems + _stored_before(engine, ids.first, first_row=first_row, name=name)
    if problems:
        problems.sort(key=lambda problem: problem.row or 0)
        raise IngestError(problems)

    try:
        import_id = _store(
            engine,
            name=name,
            sha256=sha256,
            mapping=mapping,
            checked=checked,
            progress=progress,
            rows=rows,
        )
    except IntegrityError as exc:  # a concurrent import stored the same file or record ids
        earlier = _earlier_import(engine, sha256)
        if earlier is not None:
            return IngestReport(name, sha256, 0, True, earlier)
        problems = _stored_before(engine, ids.first, first_row=first_row, name=name) or [
            IngestProblem(name, None, None, f"the database refused the import: {_first_line(exc)}")
        ]
        raise IngestError(sorted(problems, key=lambda problem: problem.row or 0)) from exc
    return IngestReport(name, sha256, checked.count, False, import_id)


def ingest_file(
    *,
    engine: Engine,
    path: Path,
    mapping: Mapping,
    progress: Progress | None = None,
) -> IngestReport:
    """Import one company file through ``mapping``; all of it, or nothing.

    Raises :class:`~node._errors.IngestError` listing every problem (file-level ones with
    ``row=None``, then each bad row's) and leaves the database unchanged. A file imported
    before (same SHA-256) is not imported again: the report says ``already_imported``.

    ``progress(done, total)`` is called every few thousand rows; ``total`` is twice the
    number of data rows (each row counts once when validated and once when stored) and the
    last call of a successful import is ``progress(total, total)``.

    Every call, whatever its outcome, is then recorded in the ingest log in a transaction of
    its own (see :mod:`node._ingest_log`).
    """
    attempt = AttemptRecorder(engine=engine, file_name=path.name,
                              mapping_sha256=mapping.mapping_sha256)
    try:
        report = _ingest(engine=engine, path=path, mapping=mapping, progress=progress,
                         attempt=attempt)
    except IngestError as exc:
        attempt.rejected(exc.problems)
        raise
    except Exception as exc:
        attempt.failed(exc)
        raise
    attempt.imported(rows=report.rows_imported, import_id=report.import_id,
                     duplicate=report.already_imported)
    return report
