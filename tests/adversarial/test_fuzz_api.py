"""schemathesis against both services' OpenAPI schemas, in process: no 5xx, no stack trace
or file path in any answer. A small seeded run; `python -m crimmis_dpn.reliability
--fuzz-examples 400` is the large one (docs/reliability.md)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from crimmis_dpn.reliability import (
    KNOWN_SERVER_ERRORS,
    FuzzFailure,
    FuzzReport,
    KnownBug,
    fuzz_app,
    fuzz_services,
    leak_in,
)

EXAMPLES = 12
SEED = 20240601


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FuzzReport]:
    found = fuzz_services(EXAMPLES, home=tmp_path_factory.mktemp("fuzz"), seed=SEED)
    return {report.service: report for report in found}


def test_every_operation_of_both_schemas_is_exercised(reports: dict[str, FuzzReport]) -> None:
    coordinator, node = reports["coordinator"], reports["node"]
    assert coordinator.operations >= 15 and node.operations >= 5
    for report in (coordinator, node):
        positive = {op for op in report.per_operation if op.endswith("(positive)")}
        assert len(positive) == report.operations
    assert coordinator.per_operation["POST /v1/queries (positive)"] == EXAMPLES
    assert node.per_operation["POST /v1/queries (negative)"] == EXAMPLES
    # Valid requests got through (not only 4xx): the fuzzing reaches the code behind them.
    assert coordinator.statuses["200"] > 20 and node.statuses["200"] > 10
    assert coordinator.statuses["401"] > 0 and coordinator.statuses["422"] > 0


def _show(failures: list[FuzzFailure]) -> str:
    return "\n\n".join(f"{f.service} {f.operation} ({f.mode}): {f.problem}\n{f.request}\n"
                       f"{f.detail[-1500:]}" for f in failures[:5])


def test_no_server_error_beyond_the_known_ones(reports: dict[str, FuzzReport]) -> None:
    unexpected = [f for r in reports.values() for f in r.unexpected]
    assert not unexpected, _show(unexpected)


def test_no_answer_carries_a_stack_trace_or_a_path(reports: dict[str, FuzzReport]) -> None:
    assert [r.leaks for r in reports.values()] == [0, 0]


# --------------------------------------------------------------------------- the harness itself


def test_leak_detection() -> None:
    assert leak_in('{"error": "invalid_request"}') is None
    assert leak_in("Traceback (most recent call last):\n  x") is not None
    assert leak_in('  File "/srv/app/x.py", line 12, in f') is not None
    assert leak_in("cannot open /srv/pool/coordinator.db", ["/srv/pool"]) is not None
    assert leak_in("/usr/lib/python3/site-packages/x") is not None
    # echoed request text is not a leak (Hypothesis draws strings from source constants)
    assert leak_in('{"node_id": "site-packages"}', sent='{"node_id": "site-packages"}') is None
    assert leak_in('{"id": "x", "at": "/usr/lib/site-packages/y"}', sent='{"id": "x"}'
                   ) is not None


def test_no_server_error_is_tolerated_as_known_any_more() -> None:
    assert KNOWN_SERVER_ERRORS == ()  # the five found by fuzzing are fixed


def test_known_errors_match_narrowly(monkeypatch: pytest.MonkeyPatch) -> None:
    bug = KnownBug("node", "POST /v1/queries",
                   "polars.exceptions.ComputeError: at least one key is required in a group_by",
                   "example", "example")
    monkeypatch.setattr("crimmis_dpn.reliability.KNOWN_SERVER_ERRORS", (bug,))
    detail = f"Traceback (most recent call last):\n  ...\n{bug.raises} operation\n\nReproduce"
    assert FuzzFailure(bug.service, bug.operation, "positive", None, "raised", "r",
                       detail).known == bug
    other = detail.replace("ComputeError", "SchemaError")
    assert FuzzFailure(bug.service, bug.operation, "positive", None, "raised", "r",
                       other).known is None
    assert FuzzFailure("coordinator", bug.operation, "positive", None, "raised", "r",
                       detail).known is None
    assert FuzzFailure(bug.service, bug.operation, "positive", 500, "HTTP 500", "r",
                       detail).known is None


class _Item(BaseModel):
    name: str
    size: int


def test_the_harness_finds_a_crash_and_a_leak() -> None:
    # A broken application: the fuzzing must report what it does wrong.
    app = FastAPI()

    @app.post("/items")
    def create(item: _Item) -> dict[str, Any]:
        if item.size < 0:
            raise RuntimeError("negative size")
        if item.size > 1000:
            return {"error": 'Traceback (most recent call last):\n  File "/srv/x.py", line 1'}
        return {"name": item.name}

    report = fuzz_app(app, service="toy", headers={}, examples=60, seed=SEED)
    problems = {f.problem for f in report.failures}
    assert "the application raised RuntimeError (HTTP 500)" in problems
    assert any(p.startswith("leak: stack trace") for p in problems)
    assert report.server_errors >= 1 and report.leaks >= 1
    assert report.unexpected

