"""`dpn node ingest` and `dpn node imports`: every attempt listed, refused ones with problems."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from crimmis_dpn.cli import _common, app
from tests.unit.node.conftest import SIMPLE_MAPPING

runner = CliRunner()
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HEADER = "id,month,commodity,flow,country,qty,unit\n"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "acme"
    result = runner.invoke(app, ["node", "init", "--id", "acme", "--name", "Acme", "--home",
                                 str(home)])
    assert result.exit_code == 0, result.output
    (tmp_path / "map.toml").write_text(SIMPLE_MAPPING, encoding="utf-8")
    return home


def _ingest(home: Path, name: str, rows: list[str], *extra: str) -> tuple[int, str, str]:
    path = home.parent / name
    path.write_text(HEADER + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    result = runner.invoke(app, ["node", "ingest", str(path), "--mapping",
                                 str(home.parent / "map.toml"), "--home", str(home), *extra])
    return result.exit_code, result.stdout, result.output


def test_imports_lists_imported_refused_and_duplicate_attempts(home: Path) -> None:
    good = ["A1,2024-01,cobalt,production,COD,5,t", "A2,2024-02,cobalt,production,COD,6,t"]
    assert _ingest(home, "good.csv", good)[0] == 0
    bad = [f"B{n},2024-01,cobalt,production,COD,-{n},t" for n in range(1, 8)]
    code, _, output = _ingest(home, "bad.csv", bad)
    assert code == 4 and "import refused" in output
    assert _ingest(home, "good.csv", good)[0] == 0  # the same file again

    listed = runner.invoke(app, ["node", "imports", "--home", str(home), "--json"])
    assert listed.exit_code == 0, listed.output
    attempts = json.loads(listed.stdout)
    assert [(a["file_name"], a["outcome"], a["row_count"], a["error_count"])
            for a in attempts] == [("good.csv", "duplicate", 0, 0), ("bad.csv", "rejected", 7, 7),
                                   ("good.csv", "imported", 2, 0)]
    assert attempts[0]["import_id"] == attempts[2]["import_id"] is not None
    assert attempts[1]["errors"][0] == {"file": "bad.csv", "row": 2, "field": "quantity",
                                        "reason": "quantity -1.0 is negative"}
    assert len(attempts[1]["errors"]) == 7

    table = runner.invoke(app, ["node", "imports", "--home", str(home), "--errors", "2"])
    assert table.exit_code == 0, table.output
    text = table.stdout
    for word in ("ingest attempts", "duplicate", "rejected", "imported", "bad.csv"):
        assert word in text
    assert "bad.csv, row 2, field quantity: quantity -1.0 is negative" in text
    assert "bad.csv, row 3, field quantity" in text
    assert "row 4," not in text and "... and 5 more" in text

    only = runner.invoke(app, ["node", "imports", "--home", str(home), "--outcome",
                               "rejected", "--json"])
    assert [a["file_name"] for a in json.loads(only.stdout)] == ["bad.csv"]
    limited = runner.invoke(app, ["node", "imports", "--home", str(home), "--limit", "1",
                                  "--json"])
    assert [a["outcome"] for a in json.loads(limited.stdout)] == ["duplicate"]


def test_imports_refuses_an_unknown_outcome_and_says_when_there_is_none(home: Path) -> None:
    wrong = runner.invoke(app, ["node", "imports", "--home", str(home), "--outcome", "lost"])
    assert wrong.exit_code == 2 and "allowed: imported, rejected" in wrong.output
    empty = runner.invoke(app, ["node", "imports", "--home", str(home)])
    assert empty.exit_code == 0 and "no import attempt yet" in empty.stdout
    assert json.loads(runner.invoke(app, ["node", "imports", "--home", str(home),
                                          "--json"]).stdout) == []


def test_ingest_progress_goes_to_a_terminal_stderr_only(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(_common, "err_console",
                        Console(file=screen, force_terminal=True, width=120))
    code, stdout, _ = _ingest(home, "good.csv", ["A1,2024-01,cobalt,production,COD,5,t"])
    assert code == 0 and stdout.strip().startswith("imported 1 records")
    assert "importing good.csv" in _ANSI.sub("", screen.getvalue())
    assert "importing" not in stdout

    screen.truncate(0)
    screen.seek(0)
    code, stdout, _ = _ingest(home, "other.csv", ["C1,2024-01,cobalt,production,COD,5,t"],
                              "--json")
    assert code == 0 and json.loads(stdout)["rows_imported"] == 1
    assert screen.getvalue() == ""
