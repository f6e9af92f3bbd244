"""Signed session cookies for the web pages (browsers cannot send bearer headers).

A login form takes the bearer token once and sets an HttpOnly, SameSite=Strict cookie
``<payload>.<HMAC-SHA256>``; the payload names the role, an expiry and a CSRF token tied to
the session. The key is random and kept in memory: restarting the service logs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request

__all__ = ["Session", "SessionSigner", "form_fields"]


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its role and the CSRF token its forms must carry."""

    role: str
    csrf: str
    expires: int


class SessionSigner:
    """Issues and checks session cookies with an in-memory HMAC key."""

    def __init__(self, *, cookie: str, path: str, lifetime_seconds: int = 8 * 3600) -> None:
        self.cookie, self.path, self.lifetime = cookie, path, lifetime_seconds
        self._key = secrets.token_bytes(32)

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def issue(self, role: str) -> tuple[str, Session]:
        """A new cookie value for ``role`` and the session it stands for."""
        session = Session(role=role, csrf=secrets.token_urlsafe(24),
                          expires=int(time.time()) + self.lifetime)
        raw = json.dumps({"r": session.role, "c": session.csrf, "e": session.expires},
                         separators=(",", ":")).encode("utf-8")
        payload = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        return f"{payload}.{self._mac(payload.encode('ascii'))}", session

    def read(self, request: Request) -> Session | None:
        """The request's valid session, or ``None``."""
        value = request.cookies.get(self.cookie, "")
        payload, _, mac = value.partition(".")
        if not payload or not mac or not hmac.compare_digest(
                mac, self._mac(payload.encode("ascii", "replace"))):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(role=str(data["r"]), csrf=str(data["c"]), expires=int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def check_csrf(self, session: Session, given: str) -> bool:
        """Whether a form's CSRF token is the session's."""
        return hmac.compare_digest(session.csrf.encode("utf-8"), given.encode("utf-8"))

    def cookie_args(self, request: Request) -> dict[str, object]:
        """Attributes of the session cookie."""
        return {"key": self.cookie, "path": self.path, "httponly": True, "samesite": "strict",
                "secure": request.url.scheme == "https", "max_age": self.lifetime}


async def form_fields(request: Request, *, limit: int = 16_384) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (first value of each)."""
    body = await request.body()
    if len(body) > limit:
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}
