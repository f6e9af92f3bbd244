"""Progress of `dpn coordinator query` and `synthetic`: on stderr, for a terminal only.

A fake coordinator (an httpx mock transport behind the real client) answers the submission
with every node pending, then one more node responds at each status request, as the real
one does while nodes poll for their jobs.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

import crimmis_dpn.cli._coordinator as coordinator_cli
from crimmis_dpn._client import CoordinatorClient
from crimmis_dpn.cli import _common, app

runner = CliRunner()
TOKEN = ["--url", "http://pool.test", "--token", "t" * 40]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeCoordinator:
    """The coordinator's /v1/queries as the CLI sees it."""

    def __init__(self, *, outcomes: tuple[str, ...] = ("answered", "answered", "refused"),
                 final: str = "completed", responds: bool = True) -> None:
        self.outcomes, self.final, self.responds = outcomes, final, responds
        self.polls: list[float] = []
        self.submitted: dict[str, Any] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/queries":
            self.submitted = json.loads(request.content)
            return httpx.Response(200, json=self.state(0))
        query_id = self.submitted["query"]["query_id"]
        assert request.method == "GET" and request.url.path == f"/v1/queries/{query_id}"
        self.polls.append(float(request.url.params["wait_seconds"]))
        return httpx.Response(200, json=self.state(len(self.polls) if self.responds else 0))

    def state(self, responded: int) -> dict[str, Any]:
        nodes = [{"node_id": f"node-{i}", "status": status if i < responded else "pending",
                  "epsilon": 0.5 if i < responded and status == "answered" else None}
                 for i, status in enumerate(self.outcomes)]
        done = responded >= len(self.outcomes)
        query = self.submitted["query"]
        state: dict[str, Any] = {
            "query": query, "status": self.final if done else "running", "nodes": nodes,
            "created_at": datetime(2026, 1, 5, tzinfo=UTC).isoformat(),
            "quorum": self.submitted["quorum"],
            "error": "too few answers" if done and self.final == "failed" else None}
        if "method" in query:  # a synthetic-data query
            state["rows"] = [[f"2024-{m:02d}", "cobalt", "mining", "production", "COD", None,
                              None, 10.0, None, 2.0] for m in (1, 2)] if done else []
            state["epsilon_by_node"] = {"node-0": 1.0, "node-1": 1.0} if done else {}
        else:
            state["cells"] = [{"key": ["COD"], "status": "published", "value": 1234.5,
                               "ci95": 12.0}] if done else []
        return state


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCoordinator:
    coordinator = FakeCoordinator()

    def client(home: Path, url: str | None, token: str | None) -> CoordinatorClient:
        made = CoordinatorClient("http://pool.test", "t" * 40)
        made._client.close()
        made._client = httpx.Client(base_url="http://pool.test/v1",
                                    transport=httpx.MockTransport(coordinator.handler))
        return made

    monkeypatch.setattr(coordinator_cli, "_client", client)
    return coordinator


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stderr as a terminal: progress is shown there (captured here)."""
    screen = io.StringIO()
    monkeypatch.setattr(_common, "err_console",
                        Console(file=screen, force_terminal=True, width=160))
    return screen


def _text(screen: io.StringIO) -> str:
    return _ANSI.sub("", screen.getvalue())


def _query_file(tmp_path: Path) -> Path:
    path = tmp_path / "query.json"
    path.write_text(json.dumps({
        "kind": "sum", "commodities": ["cobalt"], "flows": ["production"],
        "periods": ["2024"], "group_by": ["country"], "epsilon": 0.5,
        "bounds": {"record_clip": 100.0, "unit_sum_bound": 100.0}, "purpose": "testing"}))
    return path


def test_query_shows_nodes_answered_of_expected_on_a_terminal(
        tmp_path: Path, fake: FakeCoordinator, terminal: io.StringIO) -> None:
    result = runner.invoke(app, ["coordinator", "query", str(_query_file(tmp_path)),
                                 "--quorum", "2", *TOKEN])
    assert result.exit_code == 0, result.output
    assert fake.submitted["wait_seconds"] == 0.0 and fake.submitted["quorum"] == 2
    assert len(fake.polls) == 3 and all(0 < wait <= 2.0 for wait in fake.polls)
    shown = _text(terminal)
    assert "nodes answered" in shown and "3/3" in shown
    assert "completed · 2 answered · 1 refused · quorum 2" in shown
    assert "nodes answered" not in result.stdout  # progress never reaches stdout
    assert "1,234.5" in result.stdout and "node-2" in result.stdout


def test_query_json_stays_parseable_and_shows_no_progress(
        tmp_path: Path, fake: FakeCoordinator, terminal: io.StringIO) -> None:
    output = tmp_path / "result.json"
    result = runner.invoke(app, ["coordinator", "query", str(_query_file(tmp_path)), "--json",
                                 "--output", str(output), *TOKEN])
    assert result.exit_code == 0, result.output
    pooled = json.loads(result.stdout)
    assert pooled["status"] == "completed" and pooled["cells"][0]["value"] == 1234.5
    assert json.loads(output.read_text()) == pooled
    assert terminal.getvalue() == ""


def test_without_a_terminal_there_is_no_progress(tmp_path: Path, fake: FakeCoordinator) -> None:
    result = runner.invoke(app, ["coordinator", "query", str(_query_file(tmp_path)), *TOKEN])
    assert result.exit_code == 0, result.output
    assert "nodes answered" not in result.output and "quorum" not in result.output
    assert len(fake.polls) == 3  # it still waits for the answers


def test_a_query_still_running_exits_6_and_a_failed_one_4(
        tmp_path: Path, fake: FakeCoordinator) -> None:
    fake.responds = False
    running = runner.invoke(app, ["coordinator", "query", str(_query_file(tmp_path)),
                                  "--wait-seconds", "0", *TOKEN])
    assert running.exit_code == 6
    assert "is still running after 0 s" in running.output
    assert "dpn coordinator queries" in running.output
    fake.responds, fake.final, fake.polls = True, "failed", []
    failed = runner.invoke(app, ["coordinator", "query", str(_query_file(tmp_path)), *TOKEN])
    assert failed.exit_code == 4 and "failed: too few answers" in failed.output


def test_a_query_file_that_is_not_a_query_exits_2(tmp_path: Path, fake: FakeCoordinator
                                                   ) -> None:
    path = tmp_path / "q.json"
    path.write_text("[1, 2]")
    assert runner.invoke(app, ["coordinator", "query", str(path), *TOKEN]).exit_code == 2
    path.write_text("{not json")
    result = runner.invoke(app, ["coordinator", "query", str(path), *TOKEN])
    assert result.exit_code == 2 and "not a JSON query" in result.output
    assert fake.submitted == {}


def test_synthetic_shows_its_stages_on_a_terminal(
        tmp_path: Path, fake: FakeCoordinator, terminal: io.StringIO) -> None:
    output = tmp_path / "co.csv"
    result = runner.invoke(app, ["coordinator", "synthetic", "--commodity", "cobalt",
                                 "--year", "2024", "--quorum", "2", "--output", str(output),
                                 *TOKEN])
    assert result.exit_code == 0, result.output
    shown = _text(terminal)
    for stage in ("nodes fitting dp_copula tables", "3/3", "pooling 2 weighted rows",
                  f"writing {output}", "balance from the synthetic data"):
        assert stage in shown
    assert pl.read_csv(output).height == 2
    assert "2 synthetic rows from 2 node(s)" in result.stdout


def test_synthetic_json_stays_parseable(
        tmp_path: Path, fake: FakeCoordinator, terminal: io.StringIO) -> None:
    result = runner.invoke(app, ["coordinator", "synthetic", "--commodity", "cobalt",
                                 "--year", "2024", "--output", str(tmp_path / "co.parquet"),
                                 "--json", *TOKEN])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 2 and summary["epsilon_by_node"] == {"node-0": 1.0,
                                                                  "node-1": 1.0}
    assert terminal.getvalue() == ""
    assert len(fake.polls) == 3
