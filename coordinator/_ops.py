"""Operations routes of the coordinator: readiness and Prometheus metrics.

``GET /v1/ready``: 200 when the database answers and its schema is at the revision this code
expects, else 503 with the reason (liveness stays ``GET /v1/health``).

``GET /metrics`` (Prometheus text format; bearer token: ``metrics_token``, or the operator's
or auditor's; off when ``metrics_enabled = false``):

=============================================  ============================================
``dpn_coordinator_queries{status}``             pooled queries by status
``dpn_coordinator_jobs{state}``                 node jobs by state
``dpn_coordinator_query_result_seconds``        histogram: query submitted -> result
``dpn_coordinator_nodes{state}``                enrolled nodes, active / revoked
``dpn_coordinator_node_last_seen_seconds``      per active node: seconds since last contact
``dpn_coordinator_http_request_duration_...``   HTTP latency by method, route, status
=============================================  ============================================

Everything is read from the database at scrape time (so the figures survive restarts and
agree across replicas), and is only counts and timings: no query results, no node answers.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from coordinator._context import CoordinatorContext
from coordinator._db import JobRow, NodeRow, QueryRow
from coordinator._observability import HttpMetrics
from coordinator._schema import current_revision, head_revision
from protocols import API_VERSION, ErrorBody

__all__ = ["RESULT_BUCKETS", "Metrics", "metrics_of", "ops_router"]

RESULT_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
_bearer = HTTPBearer(auto_error=False)
_QUERIES = QueryRow.__table__  # type: ignore[attr-defined]
_JOBS = JobRow.__table__  # type: ignore[attr-defined]
_NODES = NodeRow.__table__  # type: ignore[attr-defined]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _DatabaseCollector(Collector):
    """Reads counts and timings from the coordinator's database at each scrape."""

    def __init__(self, context: CoordinatorContext) -> None:
        self.context = context

    def collect(self) -> Any:
        engine = self.context.engine
        queries = GaugeMetricFamily("dpn_coordinator_queries", "Pooled queries by status.",
                                    labels=["status"])
        jobs = GaugeMetricFamily("dpn_coordinator_jobs", "Node jobs by state.",
                                 labels=["state"])
        nodes = GaugeMetricFamily("dpn_coordinator_nodes", "Enrolled nodes by state.",
                                  labels=["state"])
        seen = GaugeMetricFamily("dpn_coordinator_node_last_seen_seconds",
                                 "Seconds since an active node last contacted the coordinator.",
                                 labels=["node_id"])
        now = datetime.now(UTC)
        durations: list[float] = []
        q, j, n = _QUERIES.c, _JOBS.c, _NODES.c
        with engine.connect() as connection:
            for status, count in connection.execute(
                    select(q.status, func.count()).group_by(q.status)):
                queries.add_metric([status], count)
            for state, count in connection.execute(
                    select(j.state, func.count()).group_by(j.state)):
                jobs.add_metric([state], count)
            active = revoked = 0
            for node_id, is_active, last_seen in connection.execute(
                    select(n.node_id, n.active, n.last_seen_at)):
                if not is_active:
                    revoked += 1
                    continue
                active += 1
                if last_seen is not None:
                    seen.add_metric([node_id], (now - _aware(last_seen)).total_seconds())
            nodes.add_metric(["active"], active)
            nodes.add_metric(["revoked"], revoked)
            for created, finished in connection.execute(
                    select(q.created_at, q.finished_at).where(q.finished_at.is_not(None))):
                durations.append(max(0.0, (_aware(finished) - _aware(created)).total_seconds()))
            connection.rollback()
        yield queries
        yield jobs
        yield nodes
        yield seen
        yield _histogram("dpn_coordinator_query_result_seconds",
                         "Seconds from a query's submission to its pooled result.",
                         durations, RESULT_BUCKETS)


def _histogram(name: str, documentation: str, values: list[float],
               bounds: tuple[float, ...]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    for bound in bounds:
        buckets.append((str(bound), float(sum(1 for v in values if v <= bound))))
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum(values))


class Metrics(HttpMetrics):
    """The registry of one coordinator application (tests get one per app)."""

    def __init__(self, context: CoordinatorContext) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        super().__init__(self.registry, "dpn_coordinator")
        self.registry.register(_DatabaseCollector(context))


def metrics_of(context: CoordinatorContext) -> Metrics:
    """The metrics of ``context``'s application, created on first use."""
    found = context.__dict__.get("_dpn_metrics")
    if not isinstance(found, Metrics):
        found = Metrics(context)
        context.__dict__["_dpn_metrics"] = found
    return found


def _readiness(context: CoordinatorContext) -> tuple[bool, dict[str, Any]]:
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            at = current_revision(connection)
            connection.rollback()
    except Exception as exc:  # any driver error means "not ready"
        return False, {"database": f"unreachable: {type(exc).__name__}"}
    head = head_revision()
    if at != head:
        return False, {"database": "ok",
                       "schema": f"at {at or 'no revision'}, expected {head}: "
                                 "run `dpn coordinator serve` (it migrates) or see "
                                 "docs/operations.md"}
    return True, {"database": "ok", "schema": head}


def ops_router(context: CoordinatorContext) -> APIRouter:
    """``/v1/ready`` and ``/metrics`` for ``context``'s application."""
    router = APIRouter()
    settings = context.settings
    metrics = metrics_of(context)
    allowed = [settings.operator_token, settings.auditor_token]
    if settings.metrics_token is not None:
        allowed.append(settings.metrics_token)
    tokens = [t.get_secret_value().encode("utf-8") for t in allowed]

    @router.get(f"/{API_VERSION}/ready", response_model=None)
    def ready() -> JSONResponse:
        ok, detail = _readiness(context)
        return JSONResponse(status_code=200 if ok else 503,
                            content={"status": "ready" if ok else "not_ready", **detail})

    @router.get("/metrics", response_model=None, include_in_schema=False)
    def prometheus(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                          Depends(_bearer)]) -> Response:
        if not settings.metrics_enabled:
            return _refuse(404, "not_found", "metrics are disabled (metrics_enabled = false)")
        given = credentials.credentials.encode("utf-8") if credentials else b""
        if not any(hmac.compare_digest(given, token) for token in tokens):
            return _refuse(401, "unauthorized", "missing or wrong bearer token")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content=ErrorBody(error=code, message=message).model_dump(mode="json"))
