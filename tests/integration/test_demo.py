"""`dpn demo` (the README's main job) runs end to end and leaves no process behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes


def test_demo_pools_cobalt_and_lithium_balances_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    completed = subprocess.run(
        [sys.executable, "-m", "crimmis_dpn", "demo", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "all processes stopped" in completed.stdout

    result = json.loads((workdir / "balances-2024.json").read_text())
    balances = {b["commodity"]: b for b in result["balances"]}
    assert set(balances) == {"cobalt", "lithium"}
    rows = {(r["country"], r["stage"]): r for r in balances["cobalt"]["rows"]}
    assert rows[("COD", "mining")]["production"]["status"] == "published"
    assert rows[("CHN", "refining")]["production"]["status"] == "published"
    assert rows[("IDN", "mining")]["production"]["status"] == "suppressed"  # one company
    lithium = {(r["country"], r["stage"]): r for r in balances["lithium"]["rows"]}
    assert lithium[("AUS", "mining")]["production"]["status"] == "published"
    assert lithium[("ARG", "mining")]["production"]["status"] == "suppressed"  # two
    assert all(o["status"] == "answered" for o in balances["cobalt"]["nodes"])
    assert len(balances["cobalt"]["nodes"]) >= 5

    # two balances at epsilon 3 each: 6 of the 2024 budget (and 2 of 2023) per node
    assert all(next(b for b in per if b["year"] == 2024)["spent"] == pytest.approx(6.0)
               for per in result["budgets"].values())

    leftovers = subprocess.run(["pgrep", "-f", str(workdir)],
                               capture_output=True, text=True, check=False)
    assert leftovers.stdout == "", f"processes left running: {leftovers.stdout}"
