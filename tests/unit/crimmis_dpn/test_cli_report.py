"""``dpn coordinator report``: saved balances and company concentration into one HTML file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import crimmis_dpn.cli._coordinator as cli_coordinator
from crimmis_dpn.cli import app
from crimmis_dpn.cli._report_html import CompanyConcentrationFile
from tests.unit.coordinator.test_market_report import balance

runner = CliRunner()

CELLS = {"sums": "a" * 32, "squares": "b" * 32, "cells": [
    {"key": ["COD"], "hhi": {"value": 0.4123, "raw": 0.4123, "clamped": False, "std": 0.02,
                             "ci95": 0.041}, "reason": None},
    {"key": ["ZMB"], "hhi": None, "reason": "min_contributors"}]}


def test_the_report_lists_company_concentration_from_secure_rounds(tmp_path: Path) -> None:
    saved = tmp_path / "cobalt-2024.json"
    saved.write_text(balance(2024, 1000.0).model_dump_json(), encoding="utf-8")
    cells = tmp_path / "hhi.json"
    cells.write_text(json.dumps(CELLS), encoding="utf-8")
    output = tmp_path / "report.html"
    result = runner.invoke(app, ["coordinator", "report", "--balance", str(saved),
                                 "--company-concentration", str(cells), "--output", str(output),
                                 "--draws", "50"])
    assert result.exit_code == 0, result.output
    html = output.read_text(encoding="utf-8")
    assert "Company concentration (HHI by company" in html
    assert f"COD: HHI 0.412 ± 0.041; rounds {'a' * 32} and {'b' * 32}" in html
    assert "ZMB: no HHI (min_contributors)" in html

    without = tmp_path / "plain.html"
    assert runner.invoke(app, ["coordinator", "report", "--balance", str(saved), "--output",
                               str(without), "--draws", "50"]).exit_code == 0
    assert "Company concentration" not in without.read_text(encoding="utf-8")


def test_a_malformed_concentration_file_exits_2_naming_the_field(tmp_path: Path) -> None:
    saved = tmp_path / "cobalt-2024.json"
    saved.write_text(balance(2024, 1000.0).model_dump_json(), encoding="utf-8")
    cells = tmp_path / "hhi.json"
    cells.write_text(json.dumps({**CELLS, "cells": [{"key": ["COD"], "hhi": {"value": "x"}}]}),
                     encoding="utf-8")
    output = tmp_path / "report.html"
    result = runner.invoke(app, ["coordinator", "report", "--balance", str(saved),
                                 "--company-concentration", str(cells), "--output", str(output)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{cells} is not company concentration cells: cells.0.hhi" in text, text
    assert not output.exists()  # nothing written

    result = runner.invoke(app, ["coordinator", "report", "--balance", str(cells),
                                 "--output", str(output)])
    assert result.exit_code == 2 and f"{cells} is not a balance: commodity" in " ".join(
        result.output.split()), result.output
    result = runner.invoke(app, ["coordinator", "report", "--balance", str(tmp_path / "no.json"),
                                 "--output", str(output)])
    assert result.exit_code == 2 and "no.json: cannot read it" in " ".join(
        result.output.split()), result.output


def test_company_concentration_output_is_what_the_report_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    class FakeClient:
        def __enter__(self) -> FakeClient:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def company_concentration(self, *, sums: str, squares: str) -> list[dict[str, object]]:
            assert (sums, squares) == (CELLS["sums"], CELLS["squares"])
            return list(CELLS["cells"])  # type: ignore[call-overload]

    monkeypatch.setattr(cli_coordinator, "_client", lambda *_: FakeClient())
    saved = tmp_path / "hhi.json"
    result = runner.invoke(app, ["coordinator", "company-concentration", "--sums", "a" * 32,
                                 "--squares", "b" * 32, "--output", str(saved)])
    assert result.exit_code == 0, result.output
    assert "0.412" in result.output and "min_contributors" in result.output
    assert json.loads(saved.read_text(encoding="utf-8")) == CELLS
    parsed = CompanyConcentrationFile.model_validate_json(saved.read_text(encoding="utf-8"))
    assert parsed.cells[0].hhi is not None and parsed.cells[0].hhi.value == 0.4123
