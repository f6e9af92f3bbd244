"""Operations routes of a node: readiness and Prometheus metrics.

``GET /v1/ready``: 200 when the database answers and its schema is at the revision this code
expects, else 503 with the reason. The body also states whether the node is enrolled and the
pull agent's last contact with the coordinator (a coordinator outage does not make the node
"not ready": nothing can be done about it at the node, and restarting would not help).

``GET /metrics`` (Prometheus text format; open on the local API unless ``metrics_token`` is
set, then that bearer token is required; off when ``metrics_enabled = false``):

=================================================  =========================================
``dpn_node_jobs{state}``                            jobs received, by state
``dpn_node_releases``                               releases that left the node
``dpn_node_budget_epsilon{year}``                   epsilon per accounting year (policy)
``dpn_node_budget_spent_epsilon{year}``             epsilon spent per accounting year
``dpn_node_budget_remaining_epsilon{year}``         epsilon left per accounting year
``dpn_node_enrolled``                               1 when enrolled with a coordinator
``dpn_node_agent_connected``                        1 when the last exchange succeeded
``dpn_node_agent_consecutive_failures``             failed attempts since the last success
``dpn_node_agent_last_contact_seconds``             seconds since the last successful exchange
``dpn_node_http_request_duration_seconds``          HTTP latency by method, route, status
=================================================  =========================================

Only counts, epsilon and timings: never a record, a released figure or a query's answer.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from node._budget import budget_status
from node._db import AgentStatusRow, JobRow, ReleaseRow
from node._enrolment import load_enrolment
from node._home import NodeContext
from node._observability import HttpMetrics
from node._schema import current_revision, head_revision
from protocols import API_VERSION, ErrorBody

__all__ = ["Metrics", "metrics_of", "ops_router"]

_bearer = HTTPBearer(auto_error=False)
_JOBS = JobRow.__table__  # type: ignore[attr-defined]
_RELEASES = ReleaseRow.__table__  # type: ignore[attr-defined]
_AGENT = AgentStatusRow.__table__  # type: ignore[attr-defined]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _agent_status(context: NodeContext) -> dict[str, Any] | None:
    a = _AGENT.c
    with context.engine.connect() as connection:
        row = connection.execute(select(a.connected, a.last_contact_at,
                                        a.consecutive_failures)).first()
        connection.rollback()
    if row is None:
        return None
    connected, last_contact, failures = row
    return {"connected": bool(connected),
            "last_contact_at": _aware(last_contact).isoformat() if last_contact else None,
            "seconds_since_contact": (datetime.now(UTC) - _aware(last_contact)).total_seconds()
            if last_contact else None,
            "consecutive_failures": int(failures)}


class _DatabaseCollector(Collector):
    """Reads counts, epsilon and the agent's state from the node's database at each scrape."""

    def __init__(self, context: NodeContext) -> None:
        self.context = context

    def collect(self) -> Any:
        context = self.context
        jobs = GaugeMetricFamily("dpn_node_jobs", "Jobs received, by state.", labels=["state"])
        releases = GaugeMetricFamily("dpn_node_releases", "Releases that left the node.")
        total = GaugeMetricFamily("dpn_node_budget_epsilon",
                                  "Epsilon allowed per accounting year.", labels=["year"])
        spent = GaugeMetricFamily("dpn_node_budget_spent_epsilon",
                                  "Epsilon spent per accounting year.", labels=["year"])
        left = GaugeMetricFamily("dpn_node_budget_remaining_epsilon",
                                 "Epsilon remaining per accounting year.", labels=["year"])
        j = _JOBS.c
        with context.engine.connect() as connection:
            for state, count in connection.execute(
                    select(j.state, func.count()).group_by(j.state)):
                jobs.add_metric([state], count)
            releases.add_metric([], connection.execute(
                select(func.count()).select_from(_RELEASES)).scalar_one())
            connection.rollback()
        for year in budget_status(engine=context.engine,
                                  epsilon_per_year=context.policy.budget.epsilon_per_year,
                                  delta=context.policy.budget.delta):
            total.add_metric([str(year.year)], year.total)
            spent.add_metric([str(year.year)], year.spent)
            left.add_metric([str(year.year)], year.remaining)
        agent = _agent_status(context)
        enrolled = load_enrolment(context.home) is not None
        yield jobs
        yield releases
        yield total
        yield spent
        yield left
        yield GaugeMetricFamily("dpn_node_enrolled", "1 when enrolled with a coordinator.",
                                value=1.0 if enrolled else 0.0)
        yield GaugeMetricFamily("dpn_node_agent_connected",
                                "1 when the pull agent's last exchange succeeded.",
                                value=1.0 if agent and agent["connected"] else 0.0)
        yield GaugeMetricFamily("dpn_node_agent_consecutive_failures",
                                "Failed attempts to reach the coordinator since the last success.",
                                value=float(agent["consecutive_failures"]) if agent else 0.0)
        if agent and agent["seconds_since_contact"] is not None:
            yield GaugeMetricFamily("dpn_node_agent_last_contact_seconds",
                                    "Seconds since the last successful exchange.",
                                    value=agent["seconds_since_contact"])


class Metrics(HttpMetrics):
    """The registry of one node application (tests get one per app)."""

    def __init__(self, context: NodeContext) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        super().__init__(self.registry, "dpn_node")
        self.registry.register(_DatabaseCollector(context))


def metrics_of(context: NodeContext) -> Metrics:
    """The metrics of ``context``'s application, created on first use."""
    found = context.__dict__.get("_dpn_metrics")
    if not isinstance(found, Metrics):
        found = Metrics(context)
        context.__dict__["_dpn_metrics"] = found
    return found


def _readiness(context: NodeContext) -> tuple[bool, dict[str, Any]]:
    enrolled = load_enrolment(context.home) is not None
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            at = current_revision(connection)
            connection.rollback()
        agent = _agent_status(context)
    except Exception as exc:  # any driver error means "not ready"
        return False, {"database": f"unreachable: {type(exc).__name__}", "enrolled": enrolled}
    head = head_revision()
    detail: dict[str, Any] = {"database": "ok", "schema": head, "enrolled": enrolled,
                              "agent": agent}
    if at != head:
        detail["schema"] = (f"at {at or 'no revision'}, expected {head}: restart the node "
                            "after `dpn node init`/upgrade, see docs/operations.md")
        return False, detail
    return True, detail


def ops_router(context: NodeContext) -> APIRouter:
    """``/v1/ready`` and ``/metrics`` for ``context``'s application."""
    router = APIRouter()
    settings = context.settings
    metrics = metrics_of(context)
    token = (settings.metrics_token.get_secret_value().encode("utf-8")
             if settings.metrics_token is not None else None)

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
        if token is not None:
            given = credentials.credentials.encode("utf-8") if credentials else b""
            if not hmac.compare_digest(given, token):
                return _refuse(401, "unauthorized", "missing or wrong bearer token")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content=ErrorBody(error=code, message=message).model_dump(mode="json"))
