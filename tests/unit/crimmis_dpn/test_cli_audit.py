"""`dpn node ledger-export` and `dpn audit verify/report`: a clean ledger passes (exit 0), a
tampered one fails (exit 7) naming the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import node
from crimmis_dpn.cli import app
from tests.unit.node.conftest import cobalt_query

runner = CliRunner()


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path]:
    """A node that released three answers: its ledger export and the receipts file."""
    home = tmp_path / "acme"
    result = runner.invoke(app, ["node", "init", "--id", "acme", "--name", "Acme", "--home",
                                 str(home)])
    assert result.exit_code == 0, result.output
    context = node.open_node(home)
    answers = [node.answer_query(context=context, query=cobalt_query(epsilon=0.5))
               for _ in range(3)]
    context.engine.dispose()
    ledger = tmp_path / "ledger.json"
    result = runner.invoke(app, ["node", "ledger-export", "--home", str(home), "--out",
                                 str(ledger)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 ledger entries of acme" in result.output
    receipts = tmp_path / "receipts.json"
    receipts.write_text(json.dumps({
        "node_id": "acme",
        "receipts": [a.receipt.model_dump(mode="json") for a in answers if a.receipt],
        "published": {answers[0].answer.query_id: "cobalt balance"}}), encoding="utf-8")
    return ledger, receipts


def test_a_clean_ledger_passes(exported: tuple[Path, Path]) -> None:
    ledger, receipts = exported
    result = runner.invoke(app, ["audit", "verify", str(ledger), "--receipts", str(receipts),
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["findings"] == [] and report["entries"] == 3 and report["receipts"] == 3
    assert report["spend"][0]["epsilon"] == 1.5


def test_a_tampered_ledger_fails_with_the_entry_named(exported: tuple[Path, Path]) -> None:
    ledger, receipts = exported
    data = json.loads(ledger.read_text(encoding="utf-8"))
    data["entries"][1]["cost"]["epsilon"] = 0.01  # hide part of the spend
    ledger.write_text(json.dumps(data), encoding="utf-8")
    result = runner.invoke(app, ["audit", "verify", str(ledger), "--receipts", str(receipts)])
    assert result.exit_code == 7, result.output
    assert "hash_mismatch entry 2: entry 2 was changed after it was recorded" in result.output
    assert "receipt_mismatch" in result.output


def test_the_report_is_written_as_html(exported: tuple[Path, Path], tmp_path: Path) -> None:
    ledger, receipts = exported
    out = tmp_path / "audit.html"
    result = runner.invoke(app, ["audit", "report", str(ledger), "--receipts", str(receipts),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "Privacy audit of node acme" in page and "all checks passed" in page
    assert "3 releases; spent epsilon 1.5" in page and "unit test" in page  # by purpose
    assert "plotly" in page


def test_verify_without_receipts_says_what_to_give(exported: tuple[Path, Path]) -> None:
    ledger, _ = exported
    result = runner.invoke(app, ["audit", "verify", str(ledger)])
    assert result.exit_code == 2
    assert "give --receipts FILE, or --coordinator URL and --token" in result.output


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read"),
    ("not json", "is not a valid ledger export"),
    ('{"node_id": 3}', "public_keys: Field required"),
])
def test_a_bad_ledger_file_is_refused_naming_the_file_and_field(
        exported: tuple[Path, Path], tmp_path: Path, content: str | None, says: str) -> None:
    _, receipts = exported
    bad = tmp_path / "bad-ledger.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["audit", "verify", str(bad), "--receipts", str(receipts)])
    assert result.exit_code == 4, result.output
    text = " ".join(result.output.split())  # Rich wraps long lines
    assert str(bad) in text.replace(" ", "") or "bad-ledger.json" in text
    assert says in text and "Traceback" not in result.output


def test_a_receipts_file_without_receipts_is_refused(exported: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    ledger, _ = exported
    bad = tmp_path / "receipts.json"
    bad.write_text('{"node_id": "acme"}', encoding="utf-8")
    result = runner.invoke(app, ["audit", "verify", str(ledger), "--receipts", str(bad)])
    assert result.exit_code == 4, result.output
    assert "receipts: Field required" in " ".join(result.output.split())
