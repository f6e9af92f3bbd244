"""Every secret setting refuses defaults, and every private file refuses other readers.

The secret fields are found from the settings models (any ``SecretStr``), so a new secret is
covered without touching this test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

import node
from coordinator import CoordinatorConfigError, init_coordinator, open_coordinator
from coordinator._settings import CoordinatorSettings
from node._settings import NodeSettings


def secret_fields(model: type) -> list[str]:
    return sorted(name for name, field in model.model_fields.items()  # type: ignore[attr-defined]
                  if SecretStr in getattr(field.annotation, "__args__", (field.annotation,)))


def test_the_known_secrets_are_found() -> None:
    assert secret_fields(NodeSettings) == ["access_token", "metrics_token"]
    assert secret_fields(CoordinatorSettings) == ["auditor_token", "metrics_token",
                                                  "operator_token"]


@pytest.mark.parametrize("name", secret_fields(CoordinatorSettings))
@pytest.mark.parametrize("value", ["changeme", "REPLACE-with-secrets.token_urlsafe-32-xxxxxx",
                                   "short"])
def test_coordinator_refuses_a_weak_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           name: str, value: str) -> None:
    home = tmp_path / "c"
    init_coordinator(home=home).engine.dispose()
    monkeypatch.setenv(f"DPN_COORDINATOR_{name.upper()}", value)
    with pytest.raises(CoordinatorConfigError, match=name):
        open_coordinator(home)


@pytest.mark.parametrize("name", secret_fields(NodeSettings))
def test_node_refuses_a_weak_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    name: str) -> None:
    home = tmp_path / "n"
    node.init_node(home=home, node_id="acme", display_name="Acme").engine.dispose()
    monkeypatch.setenv(f"DPN_NODE_{name.upper()}", "password")
    with pytest.raises(node.NodeConfigError, match=name):
        node.open_node(home)


@pytest.mark.parametrize("file", ["coordinator.toml", "coordinator_key.pem"])
def test_coordinator_refuses_readable_private_files_outside_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str
) -> None:
    home = tmp_path / "c"
    init_coordinator(home=home).engine.dispose()
    os.chmod(home / file, 0o644)
    with pytest.raises(CoordinatorConfigError, match="readable by other users"):
        open_coordinator(home)
    monkeypatch.setenv("DPN_COORDINATOR_ENVIRONMENT", "development")
    open_coordinator(home).engine.dispose()


@pytest.mark.parametrize("file", ["node.toml", "node_key.pem"])
def test_node_refuses_readable_private_files_outside_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str
) -> None:
    home = tmp_path / "n"
    node.init_node(home=home, node_id="acme", display_name="Acme").engine.dispose()
    os.chmod(home / file, 0o640)
    with pytest.raises(node.NodeConfigError, match="readable by other users"):
        node.open_node(home)
    monkeypatch.setenv("DPN_NODE_ENVIRONMENT", "development")
    node.open_node(home).engine.dispose()
