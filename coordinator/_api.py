"""The coordinator's HTTP API (``/v1``): thin routes over the registry, queries and balances.

Every route but ``/v1/health`` needs the operator's bearer token. No route returns a single
node's answer: only pooled cells, and per node only its status and epsilon.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from coordinator._balance import pooled_balance
from coordinator._errors import EnrolmentError, UnknownQueryError
from coordinator._models import Balance, BalanceRequest, EnrolRequest, NodeView, PooledResult
from coordinator._queries import get_result, run_pooled_query
from coordinator._registry import enrol_node, list_nodes
from coordinator._settings import CoordinatorSettings
from protocols import API_VERSION, AggregateQuery, ErrorBody

__all__ = ["create_app"]

_bearer = HTTPBearer(auto_error=False)
V = f"/{API_VERSION}"


class _Unauthorized(Exception):
    """Raised by the auth dependency; rendered as a 401 :class:`ErrorBody`."""


def _error(status: int, code: str, message: str, **detail: Any) -> JSONResponse:
    body = ErrorBody(error=code, message=message, detail=detail)
    return JSONResponse(status_code=status, content=body.model_dump(mode="json"))


def create_app(*, settings: CoordinatorSettings, engine: Engine) -> FastAPI:
    """The coordinator's FastAPI application."""
    app = FastAPI(title="crimmis-dpn coordinator", version=API_VERSION,
                  description="Pools nodes' differentially private answers.")
    token = settings.operator_token.get_secret_value().encode("utf-8")

    def require_operator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        given = credentials.credentials.encode("utf-8") if credentials else b""
        if not hmac.compare_digest(given, token):
            raise _Unauthorized()

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, __: _Unauthorized) -> JSONResponse:
        return _error(401, "unauthorized", "missing or wrong operator bearer token")

    @app.exception_handler(EnrolmentError)
    async def _enrolment(_: Request, exc: EnrolmentError) -> JSONResponse:
        return _error(502, "enrolment_failed", str(exc))

    @app.exception_handler(UnknownQueryError)
    async def _unknown(_: Request, exc: UnknownQueryError) -> JSONResponse:
        return _error(404, "unknown_query", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error(422, "invalid_request", "the request does not match the schema",
                      problems=problems)

    operator = [Depends(require_operator)]

    @app.get(f"{V}/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(f"{V}/nodes", dependencies=operator)
    def enrol(request: EnrolRequest) -> NodeView:
        return enrol_node(engine=engine, request=request)

    @app.get(f"{V}/nodes", dependencies=operator)
    def nodes() -> list[NodeView]:
        return list_nodes(engine=engine)

    @app.post(f"{V}/queries", dependencies=operator)
    async def query(query: AggregateQuery) -> PooledResult:
        return await run_pooled_query(engine=engine, query=query,
                                      timeout=settings.node_timeout_seconds)

    @app.get(f"{V}/queries/{{query_id}}", dependencies=operator)
    def result(query_id: str) -> PooledResult:
        return get_result(engine=engine, query_id=query_id)

    @app.post(f"{V}/balances", dependencies=operator)
    async def balance(request: BalanceRequest) -> Balance:
        return await pooled_balance(engine=engine, request=request,
                                    timeout=settings.node_timeout_seconds)

    return app
