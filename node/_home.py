"""A node's home directory: settings, policy, identity key and (by default) its SQLite file.

Layout::

    <home>/node.toml     settings (mode 0600: holds the access token)
    <home>/policy.toml   release policy, edited by the node owner
    <home>/node_key.pem  Ed25519 identity key (mode 0600)
    <home>/node.db       SQLite database, unless database_url points elsewhere
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from node._db import create_schema, make_engine
from node._errors import NodeConfigError
from node._policy import Policy, load_policy, policy_toml
from node._settings import SETTINGS_FILE, NodeSettings, load_settings
from protocols import (
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_b64,
)

__all__ = ["NodeContext", "init_node", "open_node"]


@dataclass
class NodeContext:
    """An opened node: its settings, policy, key and database engine."""

    home: Path
    settings: NodeSettings
    policy: Policy
    private_key: Ed25519PrivateKey
    engine: Engine

    @property
    def public_key(self) -> str:
        """Base64 Ed25519 public key."""
        return public_key_b64(self.private_key)

    @property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        return key_id(self.public_key)


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(path, 0o600)


def init_node(
    *,
    home: Path,
    node_id: str,
    display_name: str,
    database_url: str | None = None,
    port: int = 8701,
    policy: Policy | None = None,
) -> NodeContext:
    """Create a node home (refuses to overwrite one) and its database schema."""
    settings_path = home / SETTINGS_FILE
    if settings_path.exists():
        raise NodeConfigError(f"{settings_path} exists: this home already holds a node")
    home.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{(home / 'node.db').resolve()}"
    token = secrets.token_urlsafe(32)
    settings = NodeSettings(
        node_id=node_id,
        display_name=display_name,
        database_url=url,
        port=port,
        access_token=token,  # type: ignore[arg-type]
    )
    _write_private(home / settings.key_file, private_key_pem(generate_private_key()))
    (home / settings.policy_file).write_text(policy_toml(policy or Policy()), encoding="utf-8")
    lines = [
        "# Node settings. DPN_NODE_<NAME> environment variables override these.",
        f'node_id = "{node_id}"',
        f'display_name = "{display_name}"',
        f'database_url = "{url}"',
        'host = "127.0.0.1"',
        f"port = {port}",
        "# Bearer token the coordinator presents; give it to the coordinator at enrolment.",
        f'access_token = "{token}"',
        "",
    ]
    _write_private(settings_path, "\n".join(lines).encode("utf-8"))
    context = open_node(home)
    create_schema(engine=context.engine)
    return context


def _check_private_file(path: Path, settings: NodeSettings) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and settings.environment == "production":
        raise NodeConfigError(
            f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
        )


def open_node(home: Path) -> NodeContext:
    """Open an existing node home; raise :class:`NodeConfigError` with what to do next."""
    settings = load_settings(home)
    key_path = home / settings.key_file
    if not key_path.is_file():
        raise NodeConfigError(f"identity key {key_path} not found")
    _check_private_file(key_path, settings)
    _check_private_file(home / SETTINGS_FILE, settings)
    policy = load_policy(home / settings.policy_file)
    engine = make_engine(settings.database_url)
    return NodeContext(
        home=home,
        settings=settings,
        policy=policy,
        private_key=load_private_key(key_path.read_bytes()),
        engine=engine,
    )
