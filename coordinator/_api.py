"""The coordinator's HTTP API (``/v1``): thin routes over plain functions.

Three kinds of callers, with separate credentials:

* **operators** (bearer ``operator_token``): enrolment tokens, revocation, queries, balances;
* **auditors** (bearer ``auditor_token``): read the node registry and the query history;
* **nodes** (signed envelopes, no token): enrol, poll for jobs, report status and results.

No route returns records: there are none here. Nodes' individual answers stay in the job
table; responses carry pooled cells and, per node, only its status and epsilon.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select

from coordinator._audit import published_figures, verify_ledger
from coordinator._balance import pooled_balance
from coordinator._company_concentration import CompanyConcentration, company_concentration
from coordinator._context import CoordinatorContext
from coordinator._db import QueryRow
from coordinator._enrolment import (
    enrol_with_token,
    issue_enrolment_token,
    revoke_node,
    rotate_node_key,
)
from coordinator._envelopes import NodeRevokedError, open_from_node, seal_for_node
from coordinator._errors import DifferencingRefusedError, EnrolmentError, UnknownQueryError
from coordinator._jobs import (
    JobConflictError,
    due_queries,
    finalize_query,
    next_job,
    record_refusal,
    record_result,
    record_status,
    submit_query,
)
from coordinator._models import Balance, BalanceRequest, EnrolRequest, NodeView, PooledResult
from coordinator._notify import notifier as job_notifier
from coordinator._observability import RequestIdMiddleware
from coordinator._ops import metrics_of, ops_router
from coordinator._queries import deliver_push_jobs, get_result, wait_for_result
from coordinator._receipts import node_receipts
from coordinator._registry import enrol_node, list_nodes
from coordinator._requests import QueryRequest, QuerySummary, TokenIssued, TokenRequest
from coordinator._secure_rounds import (
    SecureQueryRequest,
    SecureQueryStatus,
    SecureRoundError,
    SecureRounds,
    fail_lost_rounds,
    next_secagg_job,
    receive_secagg_reply,
    secure_query_status,
    start_secure_query,
    tick_secure_rounds,
    wait_for_secure_query,
)
from coordinator._synthetic import PooledSynthetic
from coordinator._web import dashboard_router
from protocols import (
    API_VERSION,
    AuditReport,
    EnvelopeError,
    ErrorBody,
    ExpiredEnvelopeError,
    JobSpec,
    LedgerExport,
    MessageKind,
    MisaddressedEnvelopeError,
    PollBody,
    Receipt,
    RefusalBody,
    ReplayedEnvelopeError,
    ResultBody,
    SecAggJob,
    SecAggReply,
    SignedEnvelope,
    StatusBody,
    describe_validation_error,
)

__all__ = ["create_app"]

log = logging.getLogger("coordinator.api")
_bearer = HTTPBearer(auto_error=False)
V = f"/{API_VERSION}"
_FINALIZE_EVERY_SECONDS = 1.0


class _Unauthorized(Exception):
    """Raised by the auth dependency; rendered as a 401 :class:`ErrorBody`."""


class _Forbidden(Exception):
    """A valid credential without the right role."""


def _error(status: int, code: str, message: str, **detail: Any) -> JSONResponse:
    body = ErrorBody(error=code, message=message, detail=detail)
    return JSONResponse(status_code=status, content=body.model_dump(mode="json"))


def _envelope_code(exc: EnvelopeError) -> str:
    if isinstance(exc, NodeRevokedError):
        return "node_revoked"
    if isinstance(exc, ExpiredEnvelopeError):
        return "envelope_expired"
    if isinstance(exc, ReplayedEnvelopeError):
        return "envelope_replayed"
    if isinstance(exc, MisaddressedEnvelopeError):
        return "envelope_misaddressed"
    return "envelope_forged"


async def _secure_rounds_loop(rounds: SecureRounds) -> None:
    """Close secure-aggregation steps whose deadline passed (their non-responders drop out)."""
    while True:
        try:
            await asyncio.to_thread(tick_secure_rounds, rounds)
        except Exception:  # keep the loop alive; the error is logged
            log.exception("advancing secure-aggregation rounds failed")
        await asyncio.sleep(_FINALIZE_EVERY_SECONDS)


async def _finalize_loop(context: CoordinatorContext) -> None:
    """Complete or fail queries whose deadline passed (also those left by a restart)."""
    while True:
        try:
            for query_id in due_queries(engine=context.engine):
                finalize_query(engine=context.engine, query_id=query_id)
        except Exception:  # keep the loop alive; the error is logged
            log.exception("finalizing due queries failed")
        await asyncio.sleep(_FINALIZE_EVERY_SECONDS)


def create_app(context: CoordinatorContext) -> FastAPI:
    """The coordinator's FastAPI application."""
    settings, engine = context.settings, context.engine
    notifier = job_notifier()
    rounds = SecureRounds(engine=engine)  # secure-aggregation rounds: in memory only

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for query_id in fail_lost_rounds(engine=engine, rounds=rounds):
            log.warning("secure query %s failed: the coordinator restarted during its round",
                        query_id)
        task = asyncio.create_task(_finalize_loop(context))
        secure_task = asyncio.create_task(_secure_rounds_loop(rounds))
        try:
            yield
        finally:
            for running in (task, secure_task):
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    app = FastAPI(title="crimmis-dpn coordinator", version=API_VERSION, lifespan=lifespan,
                  description="Pools nodes' differentially private answers.")
    app.state.secure_rounds = rounds
    app.add_middleware(RequestIdMiddleware, context=context, metrics_of=metrics_of,
                       service="coordinator")
    app.include_router(ops_router(context))
    tokens = {
        "operator": settings.operator_token.get_secret_value().encode("utf-8"),
        "auditor": settings.auditor_token.get_secret_value().encode("utf-8"),
    }

    def role(*allowed: str) -> Callable[..., str]:
        def check(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(_bearer)]) -> str:
            given = credentials.credentials.encode("utf-8") if credentials else b""
            for name, token in tokens.items():
                if hmac.compare_digest(given, token):
                    if name not in allowed:
                        raise _Forbidden(f"the {name} credential cannot do this")
                    return name
            raise _Unauthorized()
        return check

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, __: _Unauthorized) -> JSONResponse:
        return _error(401, "unauthorized", "missing or wrong bearer token")

    @app.exception_handler(_Forbidden)
    async def _forbidden(_: Request, exc: _Forbidden) -> JSONResponse:
        return _error(403, "forbidden", str(exc))

    @app.exception_handler(EnvelopeError)
    async def _envelope(_: Request, exc: EnvelopeError) -> JSONResponse:
        return _error(401, _envelope_code(exc), str(exc))

    @app.exception_handler(EnrolmentError)
    async def _enrolment(_: Request, exc: EnrolmentError) -> JSONResponse:
        return _error(400, "enrolment_failed", str(exc))

    @app.exception_handler(UnknownQueryError)
    async def _unknown(_: Request, exc: UnknownQueryError) -> JSONResponse:
        return _error(404, "unknown_query", str(exc))

    @app.exception_handler(DifferencingRefusedError)
    async def _differencing(_: Request, exc: DifferencingRefusedError) -> JSONResponse:
        return _error(409, "differencing_refused", str(exc))

    @app.exception_handler(JobConflictError)
    async def _conflict(_: Request, exc: JobConflictError) -> JSONResponse:
        return _error(409, "job_conflict", str(exc))

    @app.exception_handler(SecureRoundError)
    async def _secure_round(_: Request, exc: SecureRoundError) -> JSONResponse:
        return _error(409, "secure_round_conflict", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error(422, "invalid_request", "the request does not match the schema",
                      problems=problems)

    operator = Depends(role("operator"))
    reader = Depends(role("operator", "auditor"))

    # --- public -------------------------------------------------------------------------

    @app.get(f"{V}/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(f"{V}/info")
    def info() -> dict[str, str]:
        return {"public_key": context.public_key, "key_id": context.key_id,
                "api_version": API_VERSION}

    # --- operators ----------------------------------------------------------------------

    @app.post(f"{V}/enrolment-tokens", dependencies=[operator])
    def new_token(request: TokenRequest) -> TokenIssued:
        token, expires = issue_enrolment_token(context=context, node_id=request.node_id,
                                               valid_hours=request.valid_hours)
        return TokenIssued(token=token, node_id=request.node_id, expires_at=expires)

    @app.post(f"{V}/nodes", dependencies=[operator])
    def enrol_push(request: EnrolRequest) -> NodeView:
        if not settings.allow_push:
            raise _Forbidden("push mode is disabled (development only: allow_push = true); "
                             "nodes enrol themselves with an enrolment token")
        return enrol_node(engine=engine, request=request)

    @app.post(f"{V}/nodes/{{node_id}}/revoke", dependencies=[operator])
    def revoke(node_id: str) -> dict[str, str]:
        revoke_node(context=context, node_id=node_id)
        return {"node_id": node_id, "status": "revoked"}

    @app.post(f"{V}/queries", dependencies=[operator])
    async def query(request: QueryRequest) -> PooledResult | PooledSynthetic:
        deadline = request.deadline_seconds or settings.default_deadline_seconds
        submitted = submit_query(engine=engine, query=request.query, quorum=request.quorum,
                                 deadline_seconds=deadline, tier=request.tier)
        if submitted.status in ("completed", "failed"):
            return submitted
        await deliver_push_jobs(engine=engine, query_id=request.query.query_id,
                                timeout=min(deadline, settings.node_timeout_seconds))
        return await wait_for_result(engine=engine, query_id=request.query.query_id,
                                     timeout=request.wait_seconds)

    @app.post(f"{V}/secure-queries", dependencies=[operator])
    async def secure_query(request: SecureQueryRequest) -> SecureQueryStatus:
        """Pool a sum by secure aggregation over the active pull-mode nodes: the nodes'
        answers are masked, only the noisy pooled sums are ever decoded
        (docs/secure-aggregation.md). The round runs in this process's memory."""
        started = await asyncio.to_thread(start_secure_query, rounds,
                                          secure_query=request.query,
                                          stage_seconds=request.stage_seconds)
        if request.wait_seconds > 0:
            return await wait_for_secure_query(rounds, query_id=started.query_id,
                                               timeout=request.wait_seconds)
        return started

    @app.post(f"{V}/balances", dependencies=[operator])
    async def balance(request: BalanceRequest) -> Balance:
        return await pooled_balance(engine=engine, request=request,
                                    timeout=settings.default_deadline_seconds)

    # --- operators and auditors -----------------------------------------------------------

    @app.get(f"{V}/audit/receipts", dependencies=[reader])
    def audit_receipts(node_id: str | None = None) -> list[Receipt]:
        """The nodes' signed ledger receipts held by the coordinator (optionally one node)."""
        return node_receipts(engine=engine, node_id=node_id)

    @app.get(f"{V}/audit/published/{{node_id}}", dependencies=[reader])
    def audit_published(node_id: str) -> dict[str, str]:
        """Query id -> purpose of every published result a node's answer went into."""
        return published_figures(engine=engine, node_id=node_id)

    @app.post(f"{V}/audit/verify", dependencies=[reader])
    def audit_verify(ledger: LedgerExport) -> AuditReport:
        """Verify a node's exported ledger (``dpn node ledger export``) against the receipts
        and published figures held here. Read-only."""
        return verify_ledger(engine=engine, ledger=ledger)

    @app.get(f"{V}/nodes", dependencies=[reader])
    def nodes() -> list[NodeView]:
        return list_nodes(engine=engine)

    @app.get(f"{V}/queries", dependencies=[reader])
    def history(limit: int = 100) -> list[QuerySummary]:
        with Session(engine) as session:
            rows = session.exec(select(QueryRow).order_by(col(QueryRow.created_at).desc())
                                .limit(min(max(limit, 1), 1000))).all()
            return [QuerySummary.model_validate(r, from_attributes=True) for r in rows]

    @app.get(f"{V}/company-concentration", dependencies=[reader],
             response_model=list[CompanyConcentration],
             responses={409: {"model": ErrorBody}})
    def company_concentration_route(sums: str, squares: str) -> Any:
        """Company HHI per cell from a completed secure ``sum`` round (``sums``: its query
        id) and ``sum_of_squares`` round (``squares``) over the same cells and nodes
        (docs/indicators.md). 409 ``incompatible_rounds`` says why two rounds do not pair."""
        try:
            return company_concentration(secure_query_status(rounds, query_id=sums),
                                         secure_query_status(rounds, query_id=squares))
        except ValueError as exc:
            return _error(409, "incompatible_rounds", str(exc))

    @app.get(f"{V}/secure-queries/{{query_id}}", dependencies=[reader])
    async def secure_result(query_id: str, wait_seconds: float = 0.0) -> SecureQueryStatus:
        """A secure query's state and, once completed, its cells (suppressed ones with the
        reason: min_contributors, dominance, dominance_unchecked)."""
        if wait_seconds > 0:
            return await wait_for_secure_query(rounds, query_id=query_id,
                                               timeout=min(wait_seconds, 600.0))
        return secure_query_status(rounds, query_id=query_id)

    @app.get(f"{V}/queries/{{query_id}}", dependencies=[reader])
    async def result(query_id: str, wait_seconds: float = 0.0
                     ) -> PooledResult | PooledSynthetic:
        if wait_seconds > 0:
            return await wait_for_result(engine=engine, query_id=query_id,
                                         timeout=min(wait_seconds, 600.0))
        return get_result(engine=engine, query_id=query_id)

    # --- nodes (signed envelopes) -----------------------------------------------------------

    @app.post(f"{V}/enrol")
    def enrol(signed: SignedEnvelope) -> SignedEnvelope:
        enrolled = enrol_with_token(context=context, signed=signed)
        return seal_for_node(context, enrolled.node_id, MessageKind.ENROLLED,
                             enrolled.model_dump(mode="json"))

    @app.post(f"{V}/jobs/poll", response_model=None)
    async def poll(signed: SignedEnvelope) -> SignedEnvelope | Response:
        node, envelope = open_from_node(context, signed, {MessageKind.POLL})
        body = _body(PollBody, envelope.body)
        job: JobSpec | SecAggJob | None = await notifier.wait_for_job(
            lambda: (next_secagg_job(rounds, node_id=node.node_id)
                     or next_job(engine=engine, node_id=node.node_id)),
            node_id=node.node_id, wait_seconds=body.wait_seconds)
        if job is None:
            return Response(status_code=204)
        if isinstance(job, SecAggJob):
            return seal_for_node(context, node.node_id, MessageKind.SECAGG_JOB,
                                 job.model_dump(mode="json"))
        return seal_for_node(context, node.node_id, MessageKind.JOB, job.model_dump(mode="json"))

    @app.post(f"{V}/jobs/status")
    def status(signed: SignedEnvelope) -> SignedEnvelope:
        node, envelope = open_from_node(context, signed, {MessageKind.STATUS})
        body = _body(StatusBody, envelope.body)
        record_status(engine=engine, node_id=node.node_id, job_id=body.job_id,
                      state=body.state, message=body.message)
        return seal_for_node(context, node.node_id, MessageKind.ACK, {"job_id": body.job_id})

    @app.post(f"{V}/jobs/result")
    def result_of_job(signed: SignedEnvelope) -> SignedEnvelope:
        node, envelope = open_from_node(context, signed, {MessageKind.RESULT})
        body = _body(ResultBody, envelope.body)
        try:
            fresh = record_result(engine=engine, node_id=node.node_id,
                                  public_key=node.public_key, job_id=body.job_id,
                                  answer=body.answer)
        except ValueError as exc:
            log.warning("rejected answer of %r to job %s: %s", node.node_id, body.job_id, exc)
            record_refusal(engine=engine, node_id=node.node_id, job_id=body.job_id,
                           reason="invalid", message=f"answer rejected: {exc}")
            raise JobConflictError(f"answer rejected: {exc}") from exc
        return seal_for_node(context, node.node_id, MessageKind.ACK,
                             {"job_id": body.job_id, "duplicate": not fresh})

    @app.post(f"{V}/jobs/secagg")
    def secagg_message(signed: SignedEnvelope) -> SignedEnvelope:
        """A node's message (or refusal) for its current step of a secure-aggregation round."""
        node, envelope = open_from_node(context, signed, {MessageKind.SECAGG_MESSAGE})
        body = _body(SecAggReply, envelope.body)
        fresh = receive_secagg_reply(rounds, node_id=node.node_id, public_key=node.public_key,
                                     reply=body, size=len(signed.model_dump_json()))
        return seal_for_node(context, node.node_id, MessageKind.ACK,
                             {"job_id": body.job_id, "duplicate": not fresh})

    @app.post(f"{V}/jobs/refusal")
    def refusal(signed: SignedEnvelope) -> SignedEnvelope:
        node, envelope = open_from_node(context, signed, {MessageKind.REFUSAL})
        body = _body(RefusalBody, envelope.body)
        fresh = record_refusal(engine=engine, node_id=node.node_id, job_id=body.job_id,
                               reason=body.reason, message=body.message)
        return seal_for_node(context, node.node_id, MessageKind.ACK,
                             {"job_id": body.job_id, "duplicate": not fresh})

    @app.post(f"{V}/keys/rotate")
    def rotate(signed: SignedEnvelope) -> SignedEnvelope:
        new_key_id = rotate_node_key(context=context, signed=signed)
        return seal_for_node(context, signed.envelope.sender, MessageKind.ACK,
                             {"key_id": new_key_id})

    app.include_router(dashboard_router(context))
    return app


_Body = TypeVar("_Body", bound=BaseModel)


def _body(model: type[_Body], body: dict[str, Any]) -> _Body:
    """Validate an envelope body; a malformed one is refused like a misaddressed envelope."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise MisaddressedEnvelopeError(
            f"malformed {model.__name__}: {describe_validation_error(exc)}") from exc
