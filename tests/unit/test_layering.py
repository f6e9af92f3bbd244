"""The architecture's import rules, checked on the source (not on what happens to be loaded).

protocols imports nothing of the repository; synthetic only protocols; node protocols and
synthetic; coordinator only protocols. node and coordinator never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocols", "synthetic", "node", "coordinator", "crimmis_dpn", "bench")
ALLOWED = {
    "protocols": set(),
    "synthetic": {"protocols"},
    "node": {"protocols", "synthetic"},
    "coordinator": {"protocols"},
}


def repo_imports(package: str) -> dict[str, set[str]]:
    """For each module file of ``package``: the repository packages it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            targets |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
        found[str(path.relative_to(ROOT))] = targets - {package}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    modules = repo_imports(package)
    assert modules, f"{package} has no modules"
    violations = {
        module: sorted(targets - ALLOWED[package])
        for module, targets in modules.items()
        if targets - ALLOWED[package]
    }
    assert violations == {}


def test_checker_detects_a_forbidden_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "node"
    fake.mkdir()
    (fake / "bad.py").write_text("from coordinator import create_app\nimport protocols\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert repo_imports("node") == {"node/bad.py": {"coordinator", "protocols"}}
