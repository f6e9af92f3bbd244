"""`dpn node peers` and `dpn node trust-peer`: the identity keys pinned for secure rounds."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import node
from crimmis_dpn.cli import app
from protocols import generate_private_key, key_id, public_key_b64

runner = CliRunner()


def test_trust_peer_pins_a_key_and_peers_lists_it(tmp_path: Path) -> None:
    home = tmp_path / "acme"
    assert runner.invoke(app, ["node", "init", "--id", "acme", "--name", "Acme", "--home",
                               str(home)]).exit_code == 0
    empty = runner.invoke(app, ["node", "peers", "--home", str(home)])
    assert empty.exit_code == 0 and "no peer pinned yet" in empty.output
    key = public_key_b64(generate_private_key())
    result = runner.invoke(app, ["node", "trust-peer", "bolt", "--key", key, "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert f"pinned bolt's key id {key_id(key)}" in result.output
    listed = runner.invoke(app, ["node", "peers", "--home", str(home), "--json"])
    assert listed.exit_code == 0, listed.output
    pins = json.loads(listed.output)
    assert pins["bolt"]["public_key"] == key and pins["bolt"]["source"] == "operator"
    table = runner.invoke(app, ["node", "peers", "--home", str(home)])
    assert "bolt" in table.output and key_id(key) in table.output and "operator" in table.output
    assert node.pinned_peer_keys(home=home)["bolt"].public_key == key
    # the node's own public key is in `dpn node status --json`, to hand to the other companies
    status = json.loads(runner.invoke(app, ["node", "status", "--home", str(home),
                                            "--json"]).output)
    assert key_id(status["public_key"]) == status["key_id"]


def test_a_bad_key_or_home_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    home = tmp_path / "acme"
    assert runner.invoke(app, ["node", "init", "--id", "acme", "--name", "Acme", "--home",
                               str(home)]).exit_code == 0
    bad = runner.invoke(app, ["node", "trust-peer", "bolt", "--key", "xyz", "--home", str(home)])
    assert bad.exit_code == 4 and "not an Ed25519 public key" in bad.output, bad.output
    assert node.pinned_peer_keys(home=home) == {}
    missing = runner.invoke(app, ["node", "peers", "--home", str(tmp_path / "nowhere")])
    assert missing.exit_code == 3, missing.output
