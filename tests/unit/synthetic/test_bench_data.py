"""The benchmark's generated records are valid rows of the domain it declares."""

from __future__ import annotations

from bench.synthetic_data import ROWS_PER_UNIT, make_company_records, make_domain
from synthetic import INPUT_COLUMNS, check_rows


def test_bench_records_are_valid_and_have_small_units() -> None:
    records = make_company_records(2000, seed=1)
    assert records.columns == list(INPUT_COLUMNS) and records.height == 2000
    assert check_rows(records, make_domain()) == []
    units = records["contribution_unit"].n_unique()
    assert 2000 / units < 2 * ROWS_PER_UNIT
    assert make_company_records(2000, seed=1).equals(records)
