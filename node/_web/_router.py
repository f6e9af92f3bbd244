"""Routes of the node admin page."""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session, col, select

from node._budget import budget_status
from node._db import ImportRow
from node._home import NodeContext
from node._ingest_log import MAX_RECORDED_ERRORS, list_attempts
from node._jobs import JobNotFoundError, approve_job, deny_job, list_jobs
from node._ledger import latest_entries
from node._summary import agent_status, data_summary
from node._web._session import Session as WebSession
from node._web._session import SessionSigner, form_fields
from protocols import AggregateQuery, JobState

__all__ = ["admin_router"]

PREFIX = "/admin"
_ATTEMPTS_SHOWN = 50  # ingest attempts on the page, newest first
_LEDGER_SHOWN = 50  # newest ledger entries on the page
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline' "
                               "'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                       autoescape=select_autoescape(["html"]), trim_blocks=True,
                       lstrip_blocks=True)


@cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs()).encode("utf-8")


@dataclass
class JobView:
    """A job as the node owner sees it: what is asked, why, and what it would cost."""

    job_id: str
    state: str
    purpose: str
    requester: str
    tier: str
    kind: str
    epsilon: float
    years: str
    commodities: str
    flows: str
    group_by: str
    periods: str
    deadline: datetime
    received_at: datetime
    decided_by: str | None
    outcome: str | None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _view(row: Any) -> JobView:
    try:
        query = AggregateQuery.model_validate_json(row.query_json)
        commodities = ", ".join(str(c) for c in query.commodities)
        flows = ", ".join(str(f) for f in query.flows)
        group_by = ", ".join(str(g) for g in query.group_by) or "(total)"
        periods = ", ".join(query.periods)
    except ValueError:
        commodities = flows = group_by = periods = "?"
    return JobView(row.job_id, row.state, row.purpose, row.requester, row.tier, row.kind,
                   row.epsilon, row.years.replace(",", ", "), commodities, flows, group_by,
                   periods, _aware(row.deadline), _aware(row.received_at), row.decided_by,
                   row.outcome_message)


def _gauge(year: int, total: float, spent: float) -> go.Figure:
    fig = go.Figure(go.Indicator(
        mode="gauge+number", value=spent, number={"valueformat": ".3g"},
        title={"text": f"{year}: epsilon spent of {total:g}"},
        gauge={"axis": {"range": [0, total]}, "bar": {"color": "#1f3a5f"},
               "steps": [{"range": [0, total * 0.8], "color": "#e6f2e9"},
                         {"range": [total * 0.8, total], "color": "#fbe3d6"}]}))
    fig.update_layout(height=230, width=330, margin={"l": 30, "r": 30, "t": 60, "b": 10})
    return fig


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def admin_router(context: NodeContext, *, allow_remote: bool | None = None) -> APIRouter:
    """The ``/admin`` pages of a node (sign in with the node's access token)."""
    if allow_remote is None:
        allow_remote = os.environ.get("DPN_ADMIN_ALLOW_REMOTE", "") in ("1", "true", "yes")
    engine = context.engine
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    signer = SessionSigner(cookie="dpn_node_session", path=PREFIX)
    token = context.settings.access_token.get_secret_value().encode("utf-8")

    def page(request: Request, template: str, session: WebSession | None,
             status_code: int = 200, **values: Any) -> HTMLResponse:
        body = _templates().get_template(template).render(
            prefix=PREFIX, session=session, node_id=context.settings.node_id,
            display_name=context.settings.display_name, **values)
        return HTMLResponse(body, status_code=status_code, headers=_HEADERS)

    def refused(request: Request) -> Response | None:
        if allow_remote or _loopback(request):
            return None
        return HTMLResponse("the admin page answers loopback clients only (open it on the "
                            "node's machine, or set DPN_ADMIN_ALLOW_REMOTE=1 behind your own "
                            "authenticating proxy)", status_code=403)

    @router.get("")
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.get("/static/plotly.min.js")
    def plotly_js(request: Request) -> Response:
        return refused(request) or Response(
            _plotly_js(), media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/login")
    def login_form(request: Request) -> Response:
        return refused(request) or page(request, "login.html", None, error=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        fields = await form_fields(request)
        if not hmac.compare_digest(fields.get("token", "").strip().encode("utf-8"), token):
            return page(request, "login.html", None, status_code=401,
                        error="Wrong token. Use the node's access_token from node.toml "
                              "(or DPN_NODE_ACCESS_TOKEN).")
        value, _ = signer.issue("owner")
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        response.set_cookie(value=value, **signer.cookie_args(request))  # type: ignore[arg-type]
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        fields = await form_fields(request)
        session = signer.read(request)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        if session is None or signer.check_csrf(session, fields.get("csrf", "")):
            response.delete_cookie(signer.cookie, path=PREFIX)
        return response

    @router.get("/")
    def overview(request: Request, done: str | None = None, error: str | None = None
                 ) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        session = signer.read(request)
        if session is None:
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        jobs = [_view(r) for r in list_jobs(engine=engine)[:100]]
        pending = [j for j in jobs if j.state == JobState.AWAITING_APPROVAL]
        total = context.policy.budget.epsilon_per_year
        delta = context.policy.budget.delta
        years = budget_status(engine=engine, epsilon_per_year=total, delta=delta)
        this_year = datetime.now(UTC).year
        if not any(s.year == this_year for s in years):
            years = [*years, *budget_status(engine=engine, epsilon_per_year=total,
                                            years=[this_year], delta=delta)]
        gauges = [_gauge_div(_gauge(s.year, s.total, s.spent), s.year) for s in years]
        with Session(engine) as db:
            imports = db.exec(select(ImportRow).order_by(col(ImportRow.imported_at).desc())
                              .limit(50)).all()
        summary = data_summary(engine=engine, coverage=context.policy.coverage)
        attempts = list_attempts(engine=engine, limit=_ATTEMPTS_SHOWN)
        ledger, ledger_total = latest_entries(engine=engine, limit=_LEDGER_SHOWN)
        return page(request, "admin.html", session, pending=pending,
                    ledger=ledger, ledger_total=ledger_total,
                    history=[j for j in jobs if j.state != JobState.AWAITING_APPROVAL],
                    budget=years, gauges=gauges, imports=imports, summary=summary,
                    attempts=attempts, attempts_shown=_ATTEMPTS_SHOWN,
                    max_errors=MAX_RECORDED_ERRORS, agent=agent_status(engine=engine),
                    done=done, error=error)

    async def decide(request: Request, job_id: str, approve: bool) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        session = signer.read(request)
        if session is None:
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        fields = await form_fields(request)
        if not signer.check_csrf(session, fields.get("csrf", "")):
            return HTMLResponse("the form's CSRF token does not match this session: reload "
                                "the page and try again", status_code=403)
        try:
            if approve:
                approve_job(engine=engine, job_id=job_id, by="admin page")
                done = f"approved job {job_id}: it runs at the agent's next turn"
            else:
                reason = fields.get("reason", "").strip()[:500] or "no reason given"
                deny_job(engine=engine, job_id=job_id, by="admin page", reason=reason)
                done = f"denied job {job_id}: the coordinator is told it is refused"
        except JobNotFoundError as exc:
            return RedirectResponse(f"{PREFIX}/?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"{PREFIX}/?done={quote(done)}", status_code=303)

    @router.post("/jobs/{job_id}/approve")
    async def approve(request: Request, job_id: str) -> Response:
        return await decide(request, job_id, True)

    @router.post("/jobs/{job_id}/deny")
    async def deny(request: Request, job_id: str) -> Response:
        return await decide(request, job_id, False)

    return router


def _gauge_div(fig: go.Figure, year: int) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"gauge-{year}",
                           config={"displaylogo": False}))
