"""The `dpn` command: help everywhere, meaningful exit codes, errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crimmis_dpn.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["node"], ["coordinator"], ["node", "ingest"],
                                  ["coordinator", "balance"], ["demo"]])
def test_every_group_and_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_commands_show_an_example_in_their_help() -> None:
    for args in (["node", "init"], ["node", "ingest"], ["coordinator", "balance"]):
        assert "Example: dpn" in runner.invoke(app, [*args, "--help"]).output


def test_node_init_then_status(tmp_path: Path) -> None:
    home = tmp_path / "acme"
    result = runner.invoke(app, ["node", "init", "--id", "acme", "--name", "Acme", "--home",
                                 str(home)])
    assert result.exit_code == 0, result.output
    assert "key id" in result.output
    status = runner.invoke(app, ["node", "status", "--home", str(home), "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["node_id"] == "acme"
    assert report["records"] == 0 and report["budget"] == []


def test_a_missing_node_home_exits_3_and_says_how_to_create_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["node", "status", "--home", str(tmp_path / "none")])
    assert result.exit_code == 3
    assert "dpn node init --home" in result.output


def test_a_second_init_exits_3(tmp_path: Path) -> None:
    args = ["node", "init", "--id", "acme", "--name", "Acme", "--home", str(tmp_path / "a")]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, args)
    assert result.exit_code == 3
    assert "already holds a node" in result.output


def test_balance_without_coordinator_details_exits_3_with_a_hint(tmp_path: Path) -> None:
    result = runner.invoke(app, ["coordinator", "balance", "--commodity", "cobalt", "--period",
                                 "2024", "--home", str(tmp_path)])
    assert result.exit_code == 3
    assert "pass --url and --token" in result.output


def test_balance_against_an_unreachable_coordinator_exits_5(tmp_path: Path) -> None:
    result = runner.invoke(app, ["coordinator", "balance", "--commodity", "cobalt", "--period",
                                 "2024", "--url", "http://127.0.0.1:9", "--token", "t" * 40])
    assert result.exit_code == 5
    assert "cannot reach the coordinator at http://127.0.0.1:9" in result.output
    assert "dpn coordinator serve" in result.output


def test_an_unknown_commodity_is_refused_with_the_allowed_codes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["coordinator", "balance", "--commodity", "unobtainium",
                                 "--period", "2024", "--url", "http://127.0.0.1:9",
                                 "--token", "t" * 40])
    assert result.exit_code == 2
    assert "allowed: cobalt" in result.output


def test_a_balance_period_that_is_not_a_period_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["coordinator", "balance", "--commodity", "cobalt",
                                 "--period", "last year", "--url", "http://127.0.0.1:9",
                                 "--token", "t" * 40])
    assert result.exit_code == 2
    assert "period: period 'last year' is not a period" in result.output


def test_synthetic_against_an_unreachable_coordinator_exits_5() -> None:
    result = runner.invoke(app, ["coordinator", "synthetic", "--commodity", "cobalt",
                                 "--year", "2024", "--url", "http://127.0.0.1:9",
                                 "--token", "t" * 40])
    assert result.exit_code == 5
    assert "cannot reach the coordinator at http://127.0.0.1:9" in result.output


def test_balance_options_are_checked_before_anything_is_asked(tmp_path: Path) -> None:
    base = ["coordinator", "balance", "--commodity", "cobalt", "--period", "2024",
            "--url", "http://127.0.0.1:9", "--token", "t" * 32]
    for extra, field in ((["--totals", "galaxy"], "totals"),
                         (["--min-contributors", "2"], "min_contributors"),
                         (["--price-epsilon", "0"], "price_epsilon")):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert field in result.output, (extra, result.output)


def test_eu_sourcing_with_an_unknown_commodity_exits_2_before_asking(tmp_path: Path) -> None:
    result = runner.invoke(app, ["coordinator", "eu-sourcing", "--commodity", "unobtainium",
                                 "--period", "2024", "--url", "http://127.0.0.1:9",
                                 "--token", "t" * 40])
    assert result.exit_code == 2, result.output
    assert "allowed: cobalt" in result.output
