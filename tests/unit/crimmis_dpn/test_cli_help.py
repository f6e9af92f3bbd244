"""Every `dpn` command and group has --help with an example of itself; exit codes are documented.

The walk covers commands added later too: a new command or group needs a line
``Example: dpn GROUP COMMAND ...`` in its docstring (or its group's ``help``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from crimmis_dpn.cli import app
from crimmis_dpn.cli._common import ExitCode

runner = CliRunner()
CLI_DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if hasattr(command, "list_commands"):  # a group
        for name in command.list_commands(None):
            yield from _walk(command.get_command(None, name), (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))


def test_the_walk_finds_every_group_and_command() -> None:
    assert {(), ("node",), ("coordinator",), ("demo",), ("node", "ingest"),
            ("node", "imports"), ("coordinator", "query"), ("coordinator", "synthetic"),
            ("coordinator", "report")} <= set(COMMANDS)
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(("dpn", *p)))
def test_every_command_and_group_has_help_with_an_example_of_itself(
        path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Usage" in text
    assert f"Example: {' '.join(('dpn', *path))}" in text


def test_docs_list_every_exit_code_the_cli_uses() -> None:
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", CLI_DOC.read_text(encoding="utf-8"), re.M)
    assert [(int(code), name) for code, name in rows] == [(int(c), c.name) for c in ExitCode]
