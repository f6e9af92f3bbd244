"""The node's HTTP API (``/v1``): thin routes over :mod:`node._release` and friends.

Only DP releases and public metadata are served; there is no route to records.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from node._agent import PullAgent
from node._budget import budget_status, recover_reservations
from node._enrolment import load_enrolment
from node._errors import BudgetExceededError, NodeError, QueryRefusedError
from node._home import NodeContext
from node._observability import RequestIdMiddleware
from node._ops import metrics_of, ops_router
from node._release import answer_query
from node._storage import storage_failure
from node._web import admin_router
from protocols import API_VERSION, AggregateQuery, ErrorBody, NodeInfo, SignedAnswer

__all__ = ["create_app"]

log = logging.getLogger("node.api")

_bearer = HTTPBearer(auto_error=False)


class BudgetYear(BaseModel):
    """Budget of one accounting year, as served at ``GET /v1/budget``."""

    year: int
    total: float
    spent: float
    remaining: float


def _error(status: int, code: str, message: str, **detail: Any) -> JSONResponse:
    body = ErrorBody(error=code, message=message, detail=detail)
    return JSONResponse(status_code=status, content=body.model_dump(mode="json"))


async def _sweep_reservations(context: NodeContext, stop: asyncio.Event) -> None:
    """Until ``stop``: give back reservations older than any computation could take.

    Covers a give-back that failed while the service runs (e.g. the database was briefly
    unreachable when a release failed): its budget would otherwise stay counted until the
    next start. A failed sweep is logged and tried again at the next interval.
    """
    settings = context.settings
    older_than = timedelta(seconds=settings.reservation_timeout_seconds)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.reservation_sweep_seconds)
            return
        try:
            given_back = await asyncio.to_thread(recover_reservations, engine=context.engine,
                                                 older_than=older_than)
        except Exception as exc:  # the database may be down: try again later
            log.warning("could not look for stale budget reservations: %s: %s",
                        type(exc).__name__, exc)
            continue
        if given_back:
            log.warning("gave back %d budget reservation(s) older than %.0f s with no release",
                        given_back, settings.reservation_timeout_seconds)


def create_app(context: NodeContext, *, run_agent: bool = True) -> FastAPI:
    """The node's FastAPI application; it runs the pull agent when the node is enrolled."""
    enrolment = load_enrolment(context.home)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Reservations left by a crash are given back (nothing was released for them).
        recovered = await asyncio.to_thread(recover_reservations, engine=context.engine,
                                            older_than=timedelta(0))
        if recovered:
            log.warning("gave back %d budget reservation(s) left by a stopped process",
                        recovered)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_sweep_reservations(context, stop))]
        if enrolment is not None and run_agent:
            tasks.append(asyncio.create_task(PullAgent(context, enrolment).run(stop)))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    app = FastAPI(
        title=f"crimmis-dpn node {context.settings.node_id}",
        version=API_VERSION,
        lifespan=lifespan,
        description="Answers pooled queries with differentially private releases only. "
                    "In pull mode the node connects out to the coordinator; this API serves "
                    "health, identity, and (development) push queries.",
    )
    app.add_middleware(RequestIdMiddleware, context=context, metrics_of=metrics_of, service="node")
    app.include_router(ops_router(context))
    token = context.settings.access_token.get_secret_value().encode("utf-8")

    def require_coordinator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        given = credentials.credentials.encode("utf-8") if credentials else b""
        if not hmac.compare_digest(given, token):
            raise _Unauthorized()

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, __: _Unauthorized) -> JSONResponse:
        return _error(401, "unauthorized", "missing or wrong bearer token")

    @app.exception_handler(BudgetExceededError)
    async def _budget(_: Request, exc: BudgetExceededError) -> JSONResponse:
        return _error(
            403, "budget_exceeded", str(exc),
            requested=exc.requested,
            remaining={str(y): v for y, v in exc.remaining.items()},
        )

    @app.exception_handler(QueryRefusedError)
    async def _refused(_: Request, exc: QueryRefusedError) -> JSONResponse:
        return _error(403, "query_refused", str(exc), rule=exc.rule)

    @app.exception_handler(NodeError)
    async def _node_error(_: Request, exc: NodeError) -> JSONResponse:
        return _error(500, "node_error", str(exc))

    @app.exception_handler(OperationalError)
    @app.exception_handler(OSError)
    async def _storage(_: Request, exc: Exception) -> JSONResponse:
        message = storage_failure(exc)
        if message is None:
            raise exc  # not the disk: the generic 500 of the error middleware
        log.error("%s (%s)", message, type(exc).__name__)
        return _error(507, "insufficient_storage",
                      f"{message}; nothing was released or charged: free space on the "
                      "node's disk and send the query again")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error(422, "invalid_request", "the request does not match the schema",
                      problems=problems)

    @app.get(f"/{API_VERSION}/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "node_id": context.settings.node_id}

    @app.get(f"/{API_VERSION}/info")
    def info() -> NodeInfo:
        return NodeInfo(
            node_id=context.settings.node_id,
            display_name=context.settings.display_name,
            public_key=context.public_key,
            key_id=context.key_id,
            allowed_commodities=list(context.policy.release.allowed_commodities),
        )

    @app.post(f"/{API_VERSION}/queries", dependencies=[Depends(require_coordinator)],
              responses={403: {"model": ErrorBody}, 507: {"model": ErrorBody}})
    def run_query(query: AggregateQuery) -> SignedAnswer:
        """Answer one query with a DP release charged to the budget (development push mode).
        403 ``budget_exceeded`` (requested vs remaining) or ``query_refused`` (the policy's
        rule); 507 ``insufficient_storage``: the disk is full, nothing released or charged."""
        return answer_query(context=context, query=query)

    @app.get(f"/{API_VERSION}/budget", dependencies=[Depends(require_coordinator)])
    def budget() -> list[BudgetYear]:
        return [
            BudgetYear(year=s.year, total=s.total, spent=s.spent, remaining=s.remaining)
            for s in budget_status(
                engine=context.engine, epsilon_per_year=context.policy.budget.epsilon_per_year,
                delta=context.policy.budget.delta,
            )
        ]

    app.include_router(admin_router(context))
    return app


class _Unauthorized(Exception):
    """Raised by the auth dependency; rendered as a 401 :class:`ErrorBody`."""
