"""Operations code shared by node and coordinator (they cannot import each other)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator._observability import configure_logging, new_request_id

ROOT = Path(__file__).resolve().parents[2]


def test_the_two_copies_of_the_observability_module_are_equal() -> None:
    assert (ROOT / "node" / "_observability.py").read_text(encoding="utf-8") == (
        ROOT / "coordinator" / "_observability.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("given", [None, "", "a b", "x" * 129, "id\nforged: line", "é"])
def test_unusable_request_ids_are_replaced(given: str | None) -> None:
    made = new_request_id(given)
    assert made != given and len(made) == 32


def test_a_plain_request_id_is_kept() -> None:
    assert new_request_id("req-42.a:b_c") == "req-42.a:b_c"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("uvicorn.access").disabled
    yield
    configure_logging("text", service="test")  # resets the module's JSON flag
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = access


def test_json_lines_carry_level_logger_service_and_extras(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("json", service="coordinator")
    configure_logging("json", service="coordinator")  # idempotent: one handler, one line
    logging.getLogger("coordinator.api").warning("rejected answer of %r", "miner-a",
                                                 extra={"job_id": "j1"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["event"] == "rejected answer of 'miner-a'"
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "coordinator.api"
    assert lines[0]["service"] == "coordinator" and lines[0]["job_id"] == "j1"
    assert "timestamp" in lines[0]
