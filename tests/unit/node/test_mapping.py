"""Mapping files: what load_mapping accepts, and the precise error for what it refuses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from node import Mapping, NodeConfigError, load_mapping
from node._mapping import STANDARD_FIELDS
from protocols import ReportingRecord

FULL = """\
# Mapping of ACME Mining's monthly shipment export.
[file]
format = "csv"
delimiter = ";"
encoding = "cp1252"

[columns]
record_id = "TxnRef"
period = "Month"
commodity = "Product"
flow = "Movement"
country = "Site country"
partner_country = "Destination"
quantity = "Qty"
unit = "UoM"
grade = "Co %"

[constants]
stage = "mining"
basis = "gross"

[values.commodity]
"Co hydroxide" = "cobalt"

[values.flow]
"Shipped" = "export"
"Mined" = "production"
"""

MINIMAL = """\
[columns]
record_id = "Ref"
period = "Month"
commodity = "Product"
flow = "Movement"
country = "Country"

[constants]
stage = "mining"
"""


def write(tmp_path: Path, text: str, name: str = "mapping.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> str:
    """The message of the NodeConfigError that load_mapping raises for ``text``."""
    path = write(tmp_path, text)
    with pytest.raises(NodeConfigError) as info:
        load_mapping(path)
    message = str(info.value)
    assert message.startswith(f"mapping file {path} ")
    return message


def test_standard_fields_are_those_of_the_reporting_record() -> None:
    assert tuple(ReportingRecord.model_fields) == STANDARD_FIELDS
    assert STANDARD_FIELDS == (
        "record_id",
        "period",
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
        "price_unit",
        "contract_type",
        "site_id",
        "contract_id",
    )


def test_loads_every_table(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, FULL))
    assert mapping.file.format == "csv"
    assert mapping.file.delimiter == ";"
    assert mapping.file.encoding == "cp1252"
    assert mapping.file.sheet is None
    assert mapping.columns == {
        "record_id": "TxnRef",
        "period": "Month",
        "commodity": "Product",
        "flow": "Movement",
        "country": "Site country",
        "partner_country": "Destination",
        "quantity": "Qty",
        "unit": "UoM",
        "grade": "Co %",
    }
    assert mapping.constants == {"stage": "mining", "basis": "gross"}
    assert mapping.values == {
        "commodity": {"Co hydroxide": "cobalt"},
        "flow": {"Shipped": "export", "Mined": "production"},
    }


def test_file_table_defaults(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, MINIMAL))
    assert mapping.file.format is None  # taken from the file's extension at import
    assert mapping.file.delimiter is None
    assert mapping.file.encoding == "utf-8"
    assert mapping.values == {}


def test_numeric_constants_are_kept(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, MINIMAL + 'basis = "gross"\ngrade = 0.62\n'))
    assert mapping.constants == {"stage": "mining", "basis": "gross", "grade": 0.62}


def test_mapping_is_frozen(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, MINIMAL))
    with pytest.raises(ValidationError):
        mapping.columns = {}  # type: ignore[misc]


def test_mapping_sha256_ignores_layout_and_comments(tmp_path: Path) -> None:
    reordered = """\
[constants]
stage = "mining"   # every row of this export is from the mine

[columns]
country = "Country"
flow = "Movement"
commodity = "Product"
period = "Month"
record_id = "Ref"

[file]
encoding = "utf-8"
"""
    first = load_mapping(write(tmp_path, MINIMAL, "a.toml"))
    second = load_mapping(write(tmp_path, reordered, "b.toml"))
    assert re.fullmatch(r"[0-9a-f]{64}", first.mapping_sha256)
    assert first.mapping_sha256 == second.mapping_sha256
    changed = load_mapping(write(tmp_path, MINIMAL.replace('"Month"', '"Period"'), "c.toml"))
    assert changed.mapping_sha256 != first.mapping_sha256


def test_mapping_sha256_is_that_of_the_canonical_json(tmp_path: Path) -> None:
    import hashlib

    from protocols import canonical_json

    mapping = load_mapping(write(tmp_path, FULL))
    expected = hashlib.sha256(canonical_json(mapping.model_dump(mode="json"))).hexdigest()
    assert mapping.mapping_sha256 == expected


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match=r"mapping file .*nowhere\.toml not found"):
        load_mapping(tmp_path / "nowhere.toml")


def test_bad_toml(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + "grade = \n")
    assert "is not valid TOML: Invalid value (at line 10, column 9)" in message


def test_unknown_key_in_file_table(tmp_path: Path) -> None:
    message = refused(tmp_path, '[file]\nsheeet = "Data"\n' + MINIMAL)
    assert message.endswith(
        "is invalid: file.sheeet: unknown key "
        "(allowed in [file]: format, sheet, delimiter, encoding)"
    )


def test_unknown_table(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + '[colums]\nunit = "UoM"\n')
    assert message.endswith(
        "is invalid: colums: unknown key "
        "(allowed tables: [file], [columns], [constants], [values.<field>])"
    )


def test_unknown_standard_field_in_columns(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL.replace("[constants]", 'quantiy = "Qty"\n[constants]'))
    assert "is invalid: [columns] 'quantiy' is not a field of the standard " in message
    assert "(did you mean 'quantity'?); the fields are: record_id, period, " in message


def test_unknown_standard_field_in_constants_and_values(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + 'commodiy = "cobalt"\n')
    assert "[constants] 'commodiy' is not a field of the standard (did you mean 'commodity'?)" in (
        message
    )
    message = refused(tmp_path, MINIMAL + '[values.flows]\n"Shipped" = "export"\n')
    assert "[values] 'flows' is not a field of the standard (did you mean 'flow'?)" in message


def test_field_from_column_and_constant(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + 'flow = "export"\n')
    assert message.endswith(
        "is invalid: flow is both in [columns] and in [constants]: "
        "a field comes from one or the other"
    )


def test_required_field_without_source(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL.replace('period = "Month"\n', ""))
    assert message.endswith("is invalid: period is required: map it to a column or a constant")


def test_record_id_cannot_be_a_constant(tmp_path: Path) -> None:
    text = MINIMAL.replace('record_id = "Ref"\n', "") + 'record_id = "R1"\n'
    assert refused(tmp_path, text).endswith(
        "is invalid: record_id cannot be a constant: every row needs its own id (map a column)"
    )
    text = MINIMAL.replace('record_id = "Ref"\n', "")
    assert refused(tmp_path, text).endswith(
        "is invalid: record_id is required: map it to a column in [columns]"
    )


def test_constant_refused_by_the_standard(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL.replace('"mining"', '"minning"'))
    assert message.endswith(
        "is invalid: [constants] stage = 'minning': stage 'minning' is not a known code "
        "(allowed: mining, refining, manufacturing, use, end_of_life)"
    )


def test_constant_must_be_string_or_number(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + "grade = true\n")
    assert message.endswith(
        "is invalid: [constants] grade = True: a constant is a string or a number"
    )


def test_constant_must_be_finite(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + 'basis = "gross"\ngrade = nan\n')
    assert message.endswith("is invalid: [constants] grade = nan: nan is not a finite number")


def test_translation_target_refused_by_the_standard(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + '[values.commodity]\n"Co" = "kobalt"\n')
    assert "is invalid: [values.commodity] 'Co' = 'kobalt': commodity 'kobalt' is not a known" in (
        message
    )


def test_translation_to_blank_is_allowed(tmp_path: Path) -> None:
    text = MINIMAL.replace("[constants]", 'partner_country = "Dest"\n[constants]')
    mapping = load_mapping(write(tmp_path, text + '[values.partner_country]\n"n/a" = ""\n'))
    assert mapping.values == {"partner_country": {"n/a": ""}}


def test_translation_of_a_constant_or_unmapped_field(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + '[values.stage]\n"M" = "mining"\n')
    assert message.endswith(
        "is invalid: [values.stage] translates stage, but stage is a constant; "
        "translations apply to values read from a column"
    )
    message = refused(tmp_path, MINIMAL + '[values.unit]\n"tonnes" = "t"\n')
    assert "[values.unit] translates unit, but unit is not mapped to a column" in message


def test_record_ids_are_not_translated(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + '[values.record_id]\n"a" = "b"\n')
    assert message.endswith("[values.record_id]: record ids are kept as they are, not translated")


def test_unsupported_encoding_format_and_delimiter(tmp_path: Path) -> None:
    message = refused(tmp_path, '[file]\nencoding = "utf-16"\n' + MINIMAL)
    assert message.endswith(
        "file.encoding: Input should be 'utf-8', 'utf-8-sig', 'latin-1' or 'cp1252'"
    )
    message = refused(tmp_path, '[file]\nformat = "xls"\n' + MINIMAL)
    assert message.endswith("file.format: Input should be 'csv', 'xlsx' or 'parquet'")
    message = refused(tmp_path, '[file]\ndelimiter = ";;"\n' + MINIMAL)
    assert message.endswith("file.delimiter: delimiter ';;' must be a single ASCII character")


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = MINIMAL.replace('period = "Month"\n', "").replace('"mining"', '"minning"')
    message = refused(tmp_path, text)
    assert "period is required: map it to a column or a constant" in message
    assert "[constants] stage = 'minning'" in message


def test_mapping_built_in_python_is_validated_too() -> None:
    with pytest.raises(ValidationError, match="country is required"):
        Mapping(
            columns={"record_id": "Ref", "period": "Month", "commodity": "C", "flow": "F"},
            constants={"stage": "mining"},
        )
