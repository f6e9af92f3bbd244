"""Routes of the dashboard: login, overview, balance pages, auditor view, plotly.js."""

from __future__ import annotations

import hmac
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from coordinator._audit import verify_ledger
from coordinator._context import CoordinatorContext
from coordinator._market import build_market_report
from coordinator._market_models import MarketReport
from coordinator._models import Balance
from coordinator._receipts import receipt_summary
from coordinator._web import _charts as charts
from coordinator._web._data import node_health, query_lines, stored_balances, stored_prices
from coordinator._web._session import Session, SessionSigner, form_fields
from protocols import AuditReport, LedgerExport, describe_validation_error

__all__ = ["dashboard_router"]

PREFIX = "/ui"
#: Largest ledger export the verify form accepts (about 20,000 entries).
_MAX_LEDGER_BYTES = 32 * 1024 * 1024
_SECURITY_HEADERS = {
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


def _fmt(value: float | None, digits: int = 0) -> str:
    return "·" if value is None else f"{value:,.{digits}f}"


def dashboard_router(context: CoordinatorContext) -> APIRouter:
    """The ``/ui`` pages of the coordinator (session cookie from the operator/auditor token)."""
    settings, engine = context.settings, context.engine
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    signer = SessionSigner(cookie="dpn_coordinator_session", path=PREFIX)
    tokens = {
        "operator": settings.operator_token.get_secret_value().encode("utf-8"),
        "auditor": settings.auditor_token.get_secret_value().encode("utf-8"),
    }
    reports: dict[tuple[str, ...], MarketReport] = {}

    def page(request: Request, template: str, session: Session | None,
             status_code: int = 200, **values: Any) -> HTMLResponse:
        body = _templates().get_template(template).render(
            prefix=PREFIX, session=session, fmt=_fmt, request_path=request.url.path, **values)
        return HTMLResponse(body, status_code=status_code, headers=_SECURITY_HEADERS)

    def login_redirect(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/login?next={quote(request.url.path)}",
                                status_code=303)

    def report_for(balances: list[Balance]) -> MarketReport:
        key = tuple(q for b in balances for q in b.query_ids)
        prices = [p for p in stored_prices(engine=engine)
                  if balances and p.query.commodities[0] == balances[0].commodity]
        key += tuple(p.query.query_id for p in prices)
        if key not in reports:
            if len(reports) > 32:
                reports.clear()
            reports[key] = build_market_report(balances, prices=prices, draws=200)
        return reports[key]

    @router.get("", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.get("/static/plotly.min.js")
    def plotly_js() -> Response:
        return Response(_plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/login")
    def login_form(request: Request, next: str = f"{PREFIX}/") -> HTMLResponse:
        return page(request, "login.html", signer.read(request), next=_safe_next(next),
                    error=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        fields = await form_fields(request)
        given = fields.get("token", "").strip().encode("utf-8")
        role = next((name for name, token in tokens.items()
                     if hmac.compare_digest(given, token)), None)
        target = _safe_next(fields.get("next", f"{PREFIX}/"))
        if role is None:
            return page(request, "login.html", None, status_code=401, next=target,
                        error="That token is neither the operator's nor the auditor's token. "
                              "Find them in coordinator.toml (operator_token, auditor_token).")
        value, _ = signer.issue(role)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(value=value, **signer.cookie_args(request))  # type: ignore[arg-type]
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        fields = await form_fields(request)
        session = signer.read(request)
        if session is not None and not signer.check_csrf(session, fields.get("csrf", "")):
            return page(request, "login.html", session, status_code=403, next=f"{PREFIX}/",
                        error="The form's CSRF token did not match; reload the page.")
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(signer.cookie, path=PREFIX)
        return response

    @router.get("/")
    def overview(request: Request) -> Response:
        session = signer.read(request)
        if session is None:
            return login_redirect(request)
        nodes = node_health(engine=engine)
        queries = query_lines(engine=engine, limit=50)
        balances = stored_balances(engine=engine)
        spent = {n.node_id: n.epsilon_by_year for n in nodes if n.epsilon_by_year}
        epsilon_div = (charts.div(charts.epsilon_chart(spent), "epsilon",
                                  height=160 + 40 * len(spent)) if spent else None)
        return page(request, "overview.html", session, nodes=nodes, queries=queries,
                    balances=balances, epsilon_div=epsilon_div)

    @router.get("/balances/{commodity}/{period}")
    def balance_page(request: Request, commodity: str, period: str) -> Response:
        session = signer.read(request)
        if session is None:
            return login_redirect(request)
        series = [b for b in stored_balances(engine=engine) if str(b.commodity) == commodity]
        balance = next((b for b in series if b.period == period), None)
        if balance is None:
            return page(request, "missing.html", session, status_code=404,
                        what=f"no completed balance of {commodity} {period}",
                        hint="run one: dpn coordinator balance --commodity COMMODITY "
                             "--period YEAR")
        report = report_for(series)
        reconciled = next(b for b in report.balances if b.period == period)
        sankey = next((s for s in report.sankeys if s.period == period), None)
        indicators = [i for i in report.indicators if i.period == period]
        divs: dict[str, str | None] = {
            "balance": charts.div(charts.balance_chart(balance), "balance", height=440)
            if balance.rows else None,
        }
        for name, fig in (("concentration", charts.concentration_chart(reconciled)),
                          ("import-reliance", charts.import_reliance_chart(indicators)),
                          ("sankey", charts.sankey_chart(sankey) if sankey else None),
                          ("prices", charts.price_chart(report.prices))):
            divs[name] = charts.div(fig, name) if fig is not None else None
        forecasts = [charts.div(charts.forecast_chart(f), f"forecast-{i}")
                     for i, f in enumerate(report.forecasts)]
        return page(request, "balance.html", session, balance=balance, reconciled=reconciled,
                    report=report, indicators=indicators, divs=divs, forecasts=forecasts,
                    sankey=sankey, years=[b.period for b in series],
                    choke_points=[c for c in report.choke_points],
                    anomalies=[a for a in report.anomalies if a.period == period])

    def audit_page(request: Request, session: Session, *, status_code: int = 200,
                   verification: AuditReport | None = None, error: str | None = None
                   ) -> Response:
        return page(request, "audit.html", session, status_code=status_code,
                    queries=query_lines(engine=engine, limit=200),
                    nodes=node_health(engine=engine), receipts=receipt_summary(engine=engine),
                    verification=verification, verify_error=error)

    @router.get("/audit")
    def audit(request: Request) -> Response:
        session = signer.read(request)
        if session is None:
            return login_redirect(request)
        return audit_page(request, session)

    @router.post("/audit/verify")
    async def audit_verify(request: Request) -> Response:
        """Verify a pasted ledger export (read-only: nothing is stored)."""
        session = signer.read(request)
        if session is None:
            return login_redirect(request)
        fields = await form_fields(request, limit=_MAX_LEDGER_BYTES)
        if not signer.check_csrf(session, fields.get("csrf", "")):
            return audit_page(request, session, status_code=403,
                              error="The form's CSRF token did not match; reload the page.")
        try:
            ledger = LedgerExport.model_validate_json(fields.get("ledger", ""))
        except ValidationError as exc:
            return audit_page(request, session, status_code=422,
                              error="That is not a ledger export (make one with `dpn node "
                                    f"ledger-export`): {describe_validation_error(exc)}")
        report = await run_in_threadpool(verify_ledger, engine=engine, ledger=ledger)
        return audit_page(request, session, verification=report)

    return router


def _safe_next(target: str) -> str:
    """Only redirect within the dashboard (no open redirect)."""
    if target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"
