"""Request ids, structured logs and HTTP metrics: the service-independent part of operations.

``node/_observability.py`` is a byte-for-byte copy (node and coordinator never import each
other, and none of this is protocol); ``tests/unit/test_ops_shared.py`` keeps them equal.

* :class:`RequestIdMiddleware` (pure ASGI, so long-polls and streaming are untouched): takes
  the caller's ``X-Request-ID`` when it is a plain token, else makes one; returns it in the
  response; binds it to every log line written while the request runs; logs one access line
  (method, route template, status, duration) and observes the HTTP latency histogram. On the
  ASGI lifespan start-up it applies ``log_format`` (after uvicorn has set up its loggers).
* :func:`configure_logging`: ``"json"`` writes one JSON object per line on stderr (structlog
  rendering stdlib records, so every library's log is included); ``"text"`` keeps plain lines.

Nothing here logs bodies, tokens, query parameters or records: only the route template.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

import structlog
from prometheus_client import CollectorRegistry, Histogram

__all__ = [
    "REQUEST_ID_HEADER",
    "HttpMetrics",
    "RequestIdMiddleware",
    "configure_logging",
    "new_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HANDLER_NAME = "dpn-structured"
_access = logging.getLogger("dpn.access")
_state = {"json": False}  # JSON logging set up: the middleware writes the access lines

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_request_id(given: str | None = None) -> str:
    """``given`` if it is a plain token (letters, digits, ``._:-``, at most 128), else new."""
    if given and _VALID_ID.match(given):
        return given
    return uuid.uuid4().hex


def configure_logging(log_format: Literal["json", "text"], *, service: str,
                      level: int = logging.INFO) -> None:
    """Send every log record to stderr as JSON lines or plain text (idempotent).

    JSON lines carry ``timestamp``, ``level``, ``logger``, ``event``, ``service`` and, inside
    a request, ``request_id`` (access lines also ``method``, ``route``, ``status``,
    ``duration_ms``). uvicorn's own access log is silenced in JSON mode: the
    middleware writes the access line, with the request id.
    """
    root = logging.getLogger()
    _state["json"] = False
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if log_format == "json":
        def add_service(_: Any, __: str, event: MutableMapping[str, Any]
                        ) -> MutableMapping[str, Any]:
            event.setdefault("service", service)
            return event

        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                add_service,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
        ))
        # Plain handlers (e.g. basicConfig's) would print every record a second time.
        for other in list(root.handlers):
            if type(other) is logging.StreamHandler:
                root.removeHandler(other)
        for name in ("uvicorn", "uvicorn.error"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
        logging.getLogger("uvicorn.access").disabled = True
        _state["json"] = True
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        if any(type(h) is logging.StreamHandler for h in root.handlers):
            return  # plain text is already written (e.g. by basicConfig)
    root.addHandler(handler)
    root.setLevel(level)


class HttpMetrics:
    """The HTTP latency histogram of one application (its own registry keeps tests apart)."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.duration = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status code.",
            ["method", "route", "status"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )


class RequestIdMiddleware:
    """Request id, access log and latency for every HTTP request; logging set-up at start-up.

    Registered with ``app.add_middleware(RequestIdMiddleware, context=context)``; the metrics
    come from the same per-context registry as the ``/metrics`` route (``metrics_of``).
    """

    def __init__(self, app: ASGIApp, *, context: Any,
                 metrics_of: Callable[[Any], HttpMetrics] | None = None,
                 service: str = "dpn") -> None:
        self.app = app
        self.context = context
        self.metrics_of = metrics_of
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            settings = getattr(self.context, "settings", None)
            log_format = getattr(settings, "log_format", "text")
            if log_format == "json":
                configure_logging("json", service=self.service)
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope.get("headers", []):
            if key == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = new_request_id(given)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                if self.metrics_of is not None:
                    self.metrics_of(self.context).duration.labels(
                        scope.get("method", ""), route, str(status)).observe(elapsed)
                if _state["json"]:  # in text mode uvicorn's access log is kept
                    _access.info("%s %s %d", scope.get("method", ""), route, status,
                                 extra={"method": scope.get("method", ""), "route": route,
                                        "status": status,
                                        "duration_ms": round(elapsed * 1000, 2)})
