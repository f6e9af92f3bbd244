"""Mapping files: how a company's export (CSV, XLSX or Parquet) maps onto the data standard.

A mapping is a TOML file (see docs/ingest.md)::

    [file]
    format = "csv"        # csv | xlsx | parquet; default: from the file extension
    sheet = "Data"        # xlsx only (default: the first sheet)
    delimiter = ","       # csv only (default "," or, for .tsv files, a tab)
    encoding = "utf-8"    # csv only: utf-8, utf-8-sig, latin-1, cp1252

    [columns]             # standard field = column name in the company's file
    record_id = "TxnRef"

    [constants]           # standard field = value used on every row
    stage = "mining"

    [values.commodity]    # per-field translation of the company's codes to standard codes
    "Co hydroxide" = "cobalt"

The standard fields are exactly those of :class:`protocols.ReportingRecord`. Everything that
can be checked without the data file is checked here: unknown keys, unknown fields, a field
both read from a column and set as a constant, required fields with no source, constants and
translation targets that the standard refuses.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from node._errors import NodeConfigError
from protocols import ReportingRecord, canonical_json

__all__ = ["STANDARD_FIELDS", "FileOptions", "Mapping", "load_mapping"]

#: The fields of the data standard, in the order of :class:`protocols.ReportingRecord`.
STANDARD_FIELDS: tuple[str, ...] = tuple(ReportingRecord.model_fields)
#: Fields a record cannot do without: the mapping must give each a column or a constant.
REQUIRED_FIELDS: tuple[str, ...] = tuple(
    name for name, info in ReportingRecord.model_fields.items() if info.is_required()
)

FileFormat = Literal["csv", "xlsx", "parquet"]
Encoding = Literal["utf-8", "utf-8-sig", "latin-1", "cp1252"]
_ColumnName = Annotated[str, Field(min_length=1)]


def _check_field_name(name: str, section: str) -> str:
    if name in STANDARD_FIELDS:
        return name
    close = difflib.get_close_matches(name, STANDARD_FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"[{section}] {name!r} is not a field of the standard{hint}; "
        f"the fields are: {', '.join(STANDARD_FIELDS)}"
    )


@cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    """A validator for one field of the standard on its own (without the record's rules)."""
    info = ReportingRecord.model_fields[name]
    field_type: Any = Annotated[(info.annotation, *info.metadata)]
    return TypeAdapter(field_type)


def _field_error(name: str, value: object) -> str | None:
    """Why the standard refuses ``value`` for field ``name``, or ``None`` if it accepts it."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    try:
        _field_adapter(name).validate_python(value.strip() if isinstance(value, str) else value)
    except ValidationError as exc:
        return "; ".join(
            str(err["msg"]).removeprefix("Value error, ") for err in exc.errors(include_url=False)
        )
    return None


class FileOptions(BaseModel):
    """The ``[file]`` table: how to read the company's file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: FileFormat | None = None
    sheet: str | None = None
    delimiter: str | None = None
    encoding: Encoding = "utf-8"

    @field_validator("delimiter")
    @classmethod
    def _one_byte(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode("utf-8")) != 1:
            raise ValueError(f"delimiter {value!r} must be a single ASCII character")
        return value


class Mapping(BaseModel):
    """A validated mapping file (see the module docstring and docs/ingest.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: FileOptions = Field(default_factory=FileOptions)
    columns: dict[str, _ColumnName] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)
    values: dict[str, dict[str, StrictStr]] = Field(default_factory=dict)

    @field_validator("columns", "constants", "values")
    @classmethod
    def _known_fields(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        for name in value:
            _check_field_name(name, str(info.field_name))
        return value

    @field_validator("constants")
    @classmethod
    def _scalar_constants(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, constant in value.items():
            if isinstance(constant, bool) or not isinstance(constant, str | int | float):
                raise ValueError(
                    f"[constants] {name} = {constant!r}: a constant is a string or a number"
                )
        return value

    @model_validator(mode="after")
    def _check_sources(self) -> Self:
        problems: list[str] = []
        for name in sorted(set(self.columns) & set(self.constants), key=STANDARD_FIELDS.index):
            problems.append(
                f"{name} is both in [columns] and in [constants]: a field comes from one or "
                "the other"
            )
        for name in REQUIRED_FIELDS:
            if name not in self.columns and name not in self.constants:
                how = "a column in [columns]" if name == "record_id" else "a column or a constant"
                problems.append(f"{name} is required: map it to {how}")
        if "record_id" in self.constants:
            problems.append(
                "record_id cannot be a constant: every row needs its own id (map a column)"
            )
        for name, constant in self.constants.items():
            error = _field_error(name, constant)
            if error is not None:
                problems.append(f"[constants] {name} = {constant!r}: {error}")
        for name, table in self.values.items():
            if name == "record_id":
                problems.append(
                    "[values.record_id]: record ids are kept as they are, not translated"
                )
                continue
            if name not in self.columns:
                where = "a constant" if name in self.constants else "not mapped to a column"
                problems.append(
                    f"[values.{name}] translates {name}, but {name} is {where}; "
                    "translations apply to values read from a column"
                )
                continue
            for source, target in table.items():
                error = None if not target.strip() else _field_error(name, target)
                if error is not None:
                    problems.append(f"[values.{name}] {source!r} = {target!r}: {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def mapping_sha256(self) -> str:
        """SHA-256 of the mapping's canonical JSON (defaults filled in, keys sorted).

        Two mapping files that differ only in comments, layout or key order hash the same.
        """
        return hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            if len(err["loc"]) == 1:
                message += " (allowed tables: [file], [columns], [constants], [values.<field>])"
            elif err["loc"][0] == "file":
                message += " (allowed in [file]: format, sheet, delimiter, encoding)"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        # our own messages name their table ("[columns] ..."): no need for the location
        parts.append(f"{loc}: {message}" if loc and not message.startswith("[") else message)
    return "; ".join(parts)


def load_mapping(path: Path) -> Mapping:
    """Read and validate a mapping file; raise :class:`NodeConfigError` naming the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NodeConfigError(f"mapping file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NodeConfigError(f"mapping file {path} cannot be read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NodeConfigError(f"mapping file {path} is not valid TOML: {exc}") from exc
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise NodeConfigError(f"mapping file {path} is invalid: {_describe(exc)}") from exc
