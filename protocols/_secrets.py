"""The rule both services apply to shared secrets (bearer tokens)."""

from __future__ import annotations

__all__ = ["check_secret_strength"]

_WELL_KNOWN = frozenset(
    {"changeme", "change-me", "secret", "password", "token", "default", "admin", "test"}
)
MIN_SECRET_LENGTH = 32


def check_secret_strength(value: str, *, name: str) -> str:
    """Return ``value`` unless it is a well-known default, a placeholder, or too short."""
    lowered = value.strip().lower()
    if lowered in _WELL_KNOWN or lowered.startswith("replace") or len(value) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"{name} is a default or too short (need >= {MIN_SECRET_LENGTH} random "
            "characters); generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value
