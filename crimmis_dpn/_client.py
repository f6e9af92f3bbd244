"""A small synchronous client of the coordinator's operator API (used by the CLI and demo)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from coordinator import (
    Balance,
    BalanceRequest,
    EnrolRequest,
    NodeView,
    PooledResult,
    PooledSynthetic,
    QueryRequest,
    QuerySummary,
    SecureQueryRequest,
    SecureQueryStatus,
    TokenIssued,
    TokenRequest,
)
from protocols import (
    API_VERSION,
    AggregateQuery,
    AuditReport,
    DataTier,
    ErrorBody,
    LedgerExport,
    Receipt,
    SecureAggregateQuery,
    SyntheticQuery,
)

__all__ = ["ClientError", "CoordinatorClient"]


class ClientError(Exception):
    """The coordinator could not be reached or refused the request (message says which)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        self.status, self.code = status, code
        super().__init__(message)


class CoordinatorClient:
    """Operator access to a coordinator: enrol nodes, run pooled queries and balances."""

    def __init__(self, url: str, token: str, *, timeout: float = 180.0,
                 verify: ssl.SSLContext | bool = True) -> None:
        """``verify``: an SSL context that trusts the coordinator's certificate, or a bool."""
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=f"{self.url}/{API_VERSION}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=verify,
        )

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach the coordinator at {self.url}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 400:
            try:
                body = ErrorBody.model_validate_json(response.content)
                message, code = body.message, body.error
            except ValueError:
                message, code = response.text[:500], None
            raise ClientError(
                f"coordinator answered HTTP {response.status_code}: {message}",
                status=response.status_code, code=code,
            )
        return response.json()

    def health(self) -> dict[str, str]:
        """The coordinator's health (no token needed)."""
        return dict(self._request("GET", "/health"))

    def enrolment_token(self, request: TokenRequest) -> TokenIssued:
        """Issue a one-time enrolment token."""
        return TokenIssued.model_validate(
            self._request("POST", "/enrolment-tokens", json=request.model_dump(mode="json")))

    def revoke(self, node_id: str) -> None:
        """Revoke a node."""
        self._request("POST", f"/nodes/{node_id}/revoke")

    def history(self, *, limit: int = 100) -> list[QuerySummary]:
        """The query history, newest first."""
        return [QuerySummary.model_validate(q)
                for q in self._request("GET", "/queries", params={"limit": limit})]

    def result(self, query_id: str, *, wait_seconds: float = 0.0) -> PooledResult:
        """A query's state (waiting up to ``wait_seconds`` for it to finish)."""
        return PooledResult.model_validate(self._request(
            "GET", f"/queries/{query_id}", params={"wait_seconds": wait_seconds}))

    def synthetic_result(self, query_id: str, *, wait_seconds: float = 0.0) -> PooledSynthetic:
        """A synthetic-data query's state (waiting up to ``wait_seconds`` for it to finish)."""
        return PooledSynthetic.model_validate(self._request(
            "GET", f"/queries/{query_id}", params={"wait_seconds": wait_seconds}))

    def enrol(self, request: EnrolRequest) -> NodeView:
        """Development only: enrol a push-mode node by URL."""
        return NodeView.model_validate(
            self._request("POST", "/nodes", json=request.model_dump(mode="json"))
        )

    def receipts(self, *, node_id: str | None = None) -> list[Receipt]:
        """The nodes' signed ledger receipts held by the coordinator (auditor or operator)."""
        params = {"node_id": node_id} if node_id is not None else {}
        return [Receipt.model_validate(r)
                for r in self._request("GET", "/audit/receipts", params=params)]

    def published(self, node_id: str) -> dict[str, str]:
        """Query id -> purpose of every published result the node's answer went into."""
        return dict(self._request("GET", f"/audit/published/{node_id}"))

    def verify_ledger(self, ledger: LedgerExport) -> AuditReport:
        """Have the coordinator audit a node's exported ledger against what it holds."""
        return AuditReport.model_validate(
            self._request("POST", "/audit/verify", json=ledger.model_dump(mode="json")))

    def nodes(self) -> list[NodeView]:
        """Enrolled nodes."""
        return [NodeView.model_validate(n) for n in self._request("GET", "/nodes")]

    def query(self, query: AggregateQuery, *, quorum: int = 3,
              deadline_seconds: float | None = None, wait_seconds: float = 120.0
              ) -> PooledResult:
        """Run a pooled query and wait for it (idempotent per query id)."""
        request = QueryRequest(query=query, quorum=quorum, deadline_seconds=deadline_seconds,
                               wait_seconds=wait_seconds)
        return PooledResult.model_validate(
            self._request("POST", "/queries", json=request.model_dump(mode="json")))

    def secure_query(self, query: SecureAggregateQuery, *, stage_seconds: float | None = None,
                     wait_seconds: float = 0.0) -> SecureQueryStatus:
        """Start a securely aggregated sum over the active pull-mode nodes (waiting up to
        ``wait_seconds`` for it to finish)."""
        request = SecureQueryRequest(query=query, stage_seconds=stage_seconds,
                                     wait_seconds=wait_seconds)
        return SecureQueryStatus.model_validate(
            self._request("POST", "/secure-queries", json=request.model_dump(mode="json")))

    def secure_result(self, query_id: str, *, wait_seconds: float = 0.0) -> SecureQueryStatus:
        """A secure query's state (waiting up to ``wait_seconds`` for it to finish)."""
        return SecureQueryStatus.model_validate(self._request(
            "GET", f"/secure-queries/{query_id}", params={"wait_seconds": wait_seconds}))

    def company_concentration(self, *, sums: str, squares: str) -> list[dict[str, Any]]:
        """Company HHI per cell from a secure ``sum`` and ``sum_of_squares`` round (ids)."""
        return list(self._request("GET", "/company-concentration",
                                  params={"sums": sums, "squares": squares}))

    def synthetic(self, query: SyntheticQuery, *, quorum: int = 3,
                  deadline_seconds: float | None = None, wait_seconds: float = 300.0
                  ) -> PooledSynthetic:
        """Ask every node for a DP synthetic table (tier bulk) and wait for the pooled one."""
        request = QueryRequest(query=query, quorum=quorum, deadline_seconds=deadline_seconds,
                               tier=DataTier.BULK, wait_seconds=wait_seconds)
        return PooledSynthetic.model_validate(
            self._request("POST", "/queries", json=request.model_dump(mode="json")))

    def balance(self, request: BalanceRequest) -> Balance:
        """Pool a commodity balance."""
        return Balance.model_validate(
            self._request("POST", "/balances", json=request.model_dump(mode="json"))
        )
