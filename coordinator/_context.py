"""An opened coordinator: settings, signing key and database engine."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from coordinator._db import create_schema, make_engine
from coordinator._errors import CoordinatorConfigError
from coordinator._settings import SETTINGS_FILE, CoordinatorSettings, init_settings, load_settings
from protocols import (
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_b64,
)

__all__ = ["CoordinatorContext", "init_coordinator", "open_coordinator"]


@dataclass
class CoordinatorContext:
    """Everything the coordinator's functions need."""

    home: Path
    settings: CoordinatorSettings
    private_key: Ed25519PrivateKey
    engine: Engine

    @property
    def public_key(self) -> str:
        """Base64 Ed25519 public key (nodes pin it at enrolment)."""
        return public_key_b64(self.private_key)

    @property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        return key_id(self.public_key)


def _check_private(path: Path, settings: CoordinatorSettings) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and settings.environment == "production":
        raise CoordinatorConfigError(
            f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
        )


def init_coordinator(*, home: Path, port: int = 8700, database_url: str | None = None,
                     allow_push: bool = False) -> CoordinatorContext:
    """Create a coordinator home: settings with fresh tokens, a signing key, the schema."""
    settings = init_settings(home=home, port=port, database_url=database_url,
                             allow_push=allow_push)
    path = home / settings.key_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(generate_private_key()))
    context = open_coordinator(home)
    create_schema(engine=context.engine)
    return context


def open_coordinator(home: Path) -> CoordinatorContext:
    """Open an existing coordinator home; raise :class:`CoordinatorConfigError` if unusable."""
    settings = load_settings(home)
    key_path = home / settings.key_file
    if not key_path.is_file():
        raise CoordinatorConfigError(f"signing key {key_path} not found")
    _check_private(key_path, settings)
    _check_private(home / SETTINGS_FILE, settings)
    return CoordinatorContext(home=home, settings=settings,
                              private_key=load_private_key(key_path.read_bytes()),
                              engine=make_engine(settings.database_url))
