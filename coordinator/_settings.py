"""Coordinator settings: ``<home>/coordinator.toml``, overridden by ``DPN_COORDINATOR_*``."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
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
    auditor_token: SecretStr = Field(description="bearer token of auditors (read-only)")
    key_file: str = Field(default="coordinator_key.pem",
                          description="Ed25519 key that signs jobs, relative to the home")
    node_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    default_deadline_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 120.0
    envelope_max_age_seconds: Annotated[float, Field(ge=10, le=3600)] = 300.0
    allow_push: bool = Field(default=False,
                             description="development only: enrol nodes by URL and push jobs")
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    environment: Literal["production", "development"] = "production"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description='"json": one JSON object per log line with a request id (production); '
                    '"text": plain lines',
    )
    metrics_enabled: bool = Field(default=True, description="serve Prometheus metrics at /metrics")
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token Prometheus presents at /metrics (>= 32 chars)"
    )

    @field_validator("metrics_token")
    @classmethod
    def _strong_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_secret_strength(value.get_secret_value(), name="metrics_token")
        return value

    @field_validator("operator_token", "auditor_token")
    @classmethod
    def _strong_token(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        check_secret_strength(value.get_secret_value(), name=info.field_name or "token")
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
        settings = CoordinatorSettings.model_validate(
            _FromHome().model_dump()  # type: ignore[call-arg]
        )
    except ValidationError as exc:
        raise CoordinatorConfigError(
            f"invalid settings in {path} or DPN_COORDINATOR_*: "
            f"{describe_validation_error(exc)}"
        ) from exc
    _check_tls_key(home, settings)
    return settings


def init_settings(*, home: Path, port: int = 8700, database_url: str | None = None,
                  allow_push: bool = False) -> CoordinatorSettings:
    """Write a new ``coordinator.toml`` (mode 0600) with fresh operator and auditor tokens."""
    path = home / SETTINGS_FILE
    if path.exists():
        raise CoordinatorConfigError(f"{path} exists: this home already holds a coordinator")
    home.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{(home / 'coordinator.db').resolve()}"
    token = secrets.token_urlsafe(32)
    auditor = secrets.token_urlsafe(32)
    text = "\n".join([
        "# Coordinator settings. DPN_COORDINATOR_<NAME> environment variables override these.",
        f'database_url = "{url}"',
        'host = "127.0.0.1"',
        f"port = {port}",
        "# Operators run queries with this bearer token; auditors read history with theirs.",
        f'operator_token = "{token}"',
        f'auditor_token = "{auditor}"',
        "# Ed25519 key that signs the jobs sent to nodes (nodes pin it at enrolment).",
        'key_file = "coordinator_key.pem"',
        "# Default deadline of a pooled query; push mode: how long to wait for each node.",
        "default_deadline_seconds = 120.0",
        "node_timeout_seconds = 30.0",
        "# Development only: enrol nodes by URL and push queries to them.",
        f"allow_push = {'true' if allow_push else 'false'}",
        "",
    ])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return load_settings(home)


def _check_tls_key(home: Path, settings: CoordinatorSettings) -> None:
    """Outside development, refuse a TLS private key that other users can read."""
    if settings.tls_key_file is None or settings.environment == "development":
        return
    key = Path(settings.tls_key_file)
    key = key if key.is_absolute() else home / key
    if key.is_file() and stat.S_IMODE(key.stat().st_mode) & 0o077:
        raise CoordinatorConfigError(
            f"TLS key {key} is readable by other users (mode "
            f"{stat.S_IMODE(key.stat().st_mode):o}); run: chmod 600 {key}"
        )
