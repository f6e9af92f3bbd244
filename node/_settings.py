"""Node settings: ``<home>/node.toml``, overridden by ``DPN_NODE_*`` environment variables."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from node._errors import NodeConfigError
from protocols import check_secret_strength, describe_validation_error

__all__ = ["SETTINGS_FILE", "NodeSettings", "load_settings"]

SETTINGS_FILE = "node.toml"


class NodeSettings(BaseSettings):
    """Everything a node needs to start. Secrets are never logged or shown."""

    model_config = SettingsConfigDict(env_prefix="DPN_NODE_", extra="forbid")

    node_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    display_name: str
    database_url: str
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8701
    access_token: SecretStr = Field(
        description="bearer token the coordinator must present to query this node"
    )
    key_file: str = "node_key.pem"
    policy_file: str = "policy.toml"
    coordinator_ca_file: str | None = Field(
        default=None,
        description="PEM certificate(s) to trust for the coordinator's TLS, instead of the "
        "system store: pins the coordinator's certificate (relative to the home or absolute)",
    )
    poll_wait_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    max_backoff_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0
    reservation_timeout_seconds: Annotated[float, Field(ge=60, le=7 * 86400)] = Field(
        default=3600.0,
        description="a budget reservation older than this with no release is given back "
                    "(longer than any computation: a synthetic fit takes minutes)",
    )
    reservation_sweep_seconds: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=300.0, description="how often the running service looks for such reservations",
    )
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

    @field_validator("access_token")
    @classmethod
    def _strong_token(cls, value: SecretStr) -> SecretStr:
        check_secret_strength(value.get_secret_value(), name="access_token")
        return value


def load_settings(home: Path) -> NodeSettings:
    """Load ``home/node.toml`` with environment overrides; raise :class:`NodeConfigError`."""
    path = home / SETTINGS_FILE
    if not path.is_file():
        raise NodeConfigError(
            f"{path} not found: create the node first with `dpn node init --home {home}`"
        )

    class _FromHome(NodeSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=path),
            )

    try:
        settings = NodeSettings.model_validate(
            _FromHome().model_dump()  # type: ignore[call-arg]
        )
    except ValidationError as exc:
        raise NodeConfigError(
            f"invalid settings in {path} or DPN_NODE_*: {describe_validation_error(exc)}"
        ) from exc
    _check_tls_key(home, settings)
    return settings


def _check_tls_key(home: Path, settings: NodeSettings) -> None:
    """Outside development, refuse a TLS private key that other users can read."""
    if settings.tls_key_file is None or settings.environment == "development":
        return
    key = Path(settings.tls_key_file)
    key = key if key.is_absolute() else home / key
    if key.is_file() and stat.S_IMODE(key.stat().st_mode) & 0o077:
        raise NodeConfigError(
            f"TLS key {key} is readable by other users (mode "
            f"{stat.S_IMODE(key.stat().st_mode):o}); run: chmod 600 {key}"
        )
