"""Node settings and policy files: examples parse, defaults and weak secrets are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import node
from protocols import AggregateQuery, DataTier

ROOT = Path(__file__).resolve().parents[3]


def test_the_documented_example_policy_parses() -> None:
    policy = node.load_policy(ROOT / "deploy" / "examples" / "policy.toml")
    assert policy.budget.epsilon_per_year == 10.0
    assert [c.commodity for c in policy.coverage] == ["cobalt", "copper"]
    assert policy.coverage[1].countries == ["COD", "ZMB"]
    assert [(r.mode, r.epsilon_above, r.tiers) for r in policy.approval.rules] == [
        ("manual", 1.0, None), ("manual", None, ["bulk"])]


def test_approval_rules_pick_the_first_match() -> None:
    policy = node.load_policy(ROOT / "deploy" / "examples" / "policy.toml")
    base = {"query_id": "0" * 32, "kind": "sum", "commodities": ["cobalt"],
            "flows": ["production"], "periods": ["2024"],
            "bounds": {"record_clip": 1, "unit_sum_bound": 1}, "purpose": "test"}
    cheap = AggregateQuery.model_validate({**base, "epsilon": 0.5})
    costly = AggregateQuery.model_validate({**base, "epsilon": 1.5})
    assert policy.approval.mode_for(cheap, DataTier.STANDARDISED) == "automatic"
    assert policy.approval.mode_for(costly, DataTier.STANDARDISED) == "manual"
    assert policy.approval.mode_for(cheap, DataTier.BULK) == "manual"


def test_a_bad_policy_file_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[budget]\nepsilon_per_year = -1\n")
    with pytest.raises(node.NodeConfigError, match=r"policy.toml is invalid.*epsilon_per_year"):
        node.load_policy(path)
    path.write_text("[budget\n")
    with pytest.raises(node.NodeConfigError, match="is not valid TOML"):
        node.load_policy(path)


def test_the_example_settings_placeholder_token_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "node.toml").write_text((ROOT / "deploy" / "examples" / "node.toml").read_text())
    with pytest.raises(node.NodeConfigError, match="access_token is a default or too short"):
        node.load_settings(home)


@pytest.mark.parametrize("token", ["changeme", "short-token", "REPLACE" + "x" * 40])
def test_weak_access_tokens_are_refused_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    context = node.init_node(home=tmp_path / "n", node_id="acme", display_name="Acme")
    context.engine.dispose()
    monkeypatch.setenv("DPN_NODE_ACCESS_TOKEN", token)
    with pytest.raises(node.NodeConfigError, match="access_token"):
        node.open_node(tmp_path / "n")


def test_environment_overrides_the_settings_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    context = node.init_node(home=tmp_path / "n", node_id="acme", display_name="Acme")
    context.engine.dispose()
    monkeypatch.setenv("DPN_NODE_PORT", "9123")
    assert node.load_settings(tmp_path / "n").port == 9123


def test_a_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    context = node.init_node(home=tmp_path / "n", node_id="acme", display_name="Acme")
    context.engine.dispose()
    key = tmp_path / "n" / "node_key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    os.chmod(key, 0o644)
    with pytest.raises(node.NodeConfigError, match=r"readable by other users.*chmod 600"):
        node.open_node(tmp_path / "n")


def test_init_refuses_to_overwrite_a_node(tmp_path: Path) -> None:
    node.init_node(home=tmp_path / "n", node_id="acme", display_name="Acme").engine.dispose()
    with pytest.raises(node.NodeConfigError, match="already holds a node"):
        node.init_node(home=tmp_path / "n", node_id="other", display_name="Other")


def test_opening_a_missing_home_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(node.NodeConfigError, match="dpn node init --home"):
        node.open_node(tmp_path / "nowhere")


def test_check_query_accepts_what_the_default_policy_allows() -> None:
    query = AggregateQuery.model_validate({
        "query_id": "0" * 32, "kind": "sum", "commodities": ["tellurium"],
        "flows": ["production"], "periods": ["2024"], "epsilon": 2.0,
        "bounds": {"record_clip": 1, "unit_sum_bound": 1}, "purpose": "test"})
    node.check_query(node.Policy(), query)
