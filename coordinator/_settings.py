"""Coordinator settings: ``<home>/coordinator.toml``, overridden by ``DPN_COORDINATOR_*``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from coordinator._errors import CoordinatorConfigError
from protocols import check_secret_strength, describe_validation_error

__all__ = ["SETTINGS_FILE", "CoordinatorSettings", "init_settings", "load_settings"]

SETTINGS_FILE = "coordinator.toml"


class CoordinatorSettings(BaseSettings):
    """Everything the coordinator needs to start. Secrets are never logged or shown."""

    model_config = SettingsConfigDict(env_prefix="DPN_COORDINATOR_", extra="forbid")

    database_url: str
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8700
    operator_token: SecretStr = Field(description="bearer token of the pool's operators")
    node_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    environment: Literal["production", "development"] = "production"

    @field_validator("operator_token")
    @classmethod
    def _strong_token(cls, value: SecretStr) -> SecretStr:
        check_secret_strength(value.get_secret_value(), name="operator_token")
        return value


def load_settings(home: Path) -> CoordinatorSettings:
    """Load ``home/coordinator.toml`` with environment overrides."""
    path = home / SETTINGS_FILE
    if not path.is_file():
        raise CoordinatorConfigError(
            f"{path} not found: create it with `dpn coordinator init --home {home}`"
        )

    class _FromHome(CoordinatorSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings,
                    TomlConfigSettingsSource(settings_cls, toml_file=path))

    try:
        return CoordinatorSettings.model_validate(
            _FromHome().model_dump()  # type: ignore[call-arg]
        )
    except ValidationError as exc:
        raise CoordinatorConfigError(
            f"invalid settings in {path} or DPN_COORDINATOR_*: "
            f"{describe_validation_error(exc)}"
        ) from exc


def init_settings(*, home: Path, port: int = 8700, database_url: str | None = None
                  ) -> CoordinatorSettings:
    """Write a new ``coordinator.toml`` (mode 0600) with a fresh operator token."""
    path = home / SETTINGS_FILE
    if path.exists():
        raise CoordinatorConfigError(f"{path} exists: this home already holds a coordinator")
    home.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{(home / 'coordinator.db').resolve()}"
    token = secrets.token_urlsafe(32)
    text = "\n".join([
        "# Coordinator settings. DPN_COORDINATOR_<NAME> environment variables override these.",
        f'database_url = "{url}"',
        'host = "127.0.0.1"',
        f"port = {port}",
        "# Operators present this bearer token; keep it secret.",
        f'operator_token = "{token}"',
        "# How long a pooled query waits for each node.",
        "node_timeout_seconds = 30.0",
        "",
    ])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return load_settings(home)
