"""The public Python client of a crimmis-dpn coordinator, for operators and analysts.

Sync (:class:`Client`) and async (:class:`AsyncClient`), built on httpx, with one exception
base (:class:`DPNError`) and a small hierarchy in the style of httpx::

    from crimmis_dpn.client import Client

    with Client("https://pool.example.org", token="OPERATOR_TOKEN") as dpn:
        balance = dpn.balance("cobalt", "2024", epsilon=1.0)
        frame = dpn.balance_frame(balance)            # Polars (or dpn.balance_pandas(...))
        for node in dpn.nodes():
            print(node.node_id, node.last_seen_at)

    async with AsyncClient(url, token=token) as dpn:
        result = await dpn.query(my_aggregate_query, quorum=3)

Auditor tokens can read (``nodes``, ``queries``, ``result``); running queries and balances
needs the operator token.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx

from coordinator import (
    Balance,
    BalanceRequest,
    NodeView,
    PooledResult,
    QueryRequest,
    QuerySummary,
)
from protocols import API_VERSION, AggregateQuery, Commodity, DataTier, ErrorBody

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConnectError",
    "DPNError",
    "ForbiddenError",
    "HTTPStatusError",
    "InvalidRequestError",
    "NotFoundError",
    "QueryFailedError",
    "ServerError",
    "balance_frame",
    "balance_pandas",
]

#: Columns of :func:`balance_frame`: one row per country, stage and figure.
FRAME_COLUMNS = ("commodity", "period", "country", "stage", "figure", "status", "value",
                 "std", "ci95")
_FIGURES = ("production", "imports", "exports", "consumption", "recycling_input", "waste",
            "opening_stock", "closing_stock", "stock_change", "apparent_consumption")


class DPNError(Exception):
    """Base of every error this client raises."""


class ConnectError(DPNError):
    """The coordinator could not be reached (network, TLS, timeout)."""


class HTTPStatusError(DPNError):
    """The coordinator answered with an error status: ``status``, ``code`` and ``detail``."""

    def __init__(self, message: str, *, status: int, code: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.detail = status, code, detail or {}


class AuthenticationError(HTTPStatusError):
    """401: missing or wrong token."""


class ForbiddenError(HTTPStatusError):
    """403: the token's role cannot do this (e.g. an auditor running a query)."""


class NotFoundError(HTTPStatusError):
    """404: no such query."""


class InvalidRequestError(HTTPStatusError):
    """400, 409 or 422: the request does not match the schema or the state."""


class ServerError(HTTPStatusError):
    """5xx: the coordinator failed."""


class QueryFailedError(DPNError):
    """A pooled query finished as ``failed`` (too few answers by the deadline)."""

    def __init__(self, result: PooledResult) -> None:
        super().__init__(result.error or f"query {result.query.query_id} failed")
        self.result = result


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = ErrorBody.model_validate_json(response.content)
        message, code, detail = body.message, body.error, dict(body.detail)
    except ValueError:
        message, code, detail = response.text[:500], None, {}
    status = response.status_code
    kind: type[HTTPStatusError] = (
        AuthenticationError if status == 401 else ForbiddenError if status == 403
        else NotFoundError if status == 404 else ServerError if status >= 500
        else InvalidRequestError)
    raise kind(f"coordinator answered HTTP {status}: {message}", status=status, code=code,
               detail=detail)


def balance_frame(balance: Balance) -> polars.DataFrame:
    """The balance as a long Polars frame (see :data:`FRAME_COLUMNS`)."""
    import polars as pl

    return pl.DataFrame(list(_balance_rows(balance)), schema={
        "commodity": pl.String, "period": pl.String, "country": pl.String,
        "stage": pl.String, "figure": pl.String, "status": pl.String,
        "value": pl.Float64, "std": pl.Float64, "ci95": pl.Float64}, orient="row")


def balance_pandas(balance: Balance) -> pandas.DataFrame:
    """The balance as a long pandas frame (see :data:`FRAME_COLUMNS`)."""
    import pandas as pd

    return pd.DataFrame(list(_balance_rows(balance)), columns=list(FRAME_COLUMNS))


def _balance_rows(balance: Balance) -> Iterable[tuple[Any, ...]]:
    for row in balance.rows:
        for name in _FIGURES:
            f = getattr(row, name)
            yield (str(balance.commodity), balance.period, row.country, row.stage, name,
                   str(f.status), f.value, f.std, f.ci95)


def _balance_request(commodity: Commodity | str, period: str, epsilon: float,
                     options: dict[str, Any]) -> dict[str, Any]:
    request = BalanceRequest.model_validate({"commodity": commodity, "period": period,
                                             "epsilon": epsilon, **options})
    return request.model_dump(mode="json", exclude_none=True)


def _query_request(query: AggregateQuery, quorum: int, deadline_seconds: float | None,
                   wait_seconds: float, tier: DataTier) -> dict[str, Any]:
    return QueryRequest(query=query, quorum=quorum, deadline_seconds=deadline_seconds,
                        wait_seconds=wait_seconds, tier=tier).model_dump(mode="json")


def _finished(result: PooledResult, check: bool) -> PooledResult:
    if check and result.status == "failed":
        raise QueryFailedError(result)
    return result


class _Base:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._base = f"{self.url}/{API_VERSION}"
        self._headers = {"Authorization": f"Bearer {token}"}

    def _unreachable(self, exc: httpx.HTTPError) -> ConnectError:
        return ConnectError(f"cannot reach the coordinator at {self.url}: "
                            f"{type(exc).__name__}: {exc}; is it running and is the URL right?")


class Client(_Base):
    """Synchronous client. Use as a context manager or call :meth:`close`."""

    def __init__(self, url: str, token: str, *, timeout: float = 300.0,
                 verify: ssl.SSLContext | bool = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``verify``: an SSL context trusting the coordinator's certificate, or a bool."""
        super().__init__(url, token)
        self._http = httpx.Client(base_url=self._base, headers=self._headers, timeout=timeout,
                                  verify=verify, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        _raise_for(response)
        return response.json()

    def health(self) -> dict[str, str]:
        """``{"status": "ok"}`` when the coordinator is up (no token needed)."""
        return dict(self._call("GET", "/health"))

    def nodes(self) -> list[NodeView]:
        """Enrolled nodes (operator or auditor)."""
        return [NodeView.model_validate(n) for n in self._call("GET", "/nodes")]

    def queries(self, *, limit: int = 100) -> list[QuerySummary]:
        """The query history, newest first (operator or auditor)."""
        return [QuerySummary.model_validate(q)
                for q in self._call("GET", "/queries", params={"limit": limit})]

    def result(self, query_id: str, *, wait_seconds: float = 0.0) -> PooledResult:
        """A query's state, waiting up to ``wait_seconds`` for it to finish."""
        return PooledResult.model_validate(self._call(
            "GET", f"/queries/{query_id}", params={"wait_seconds": wait_seconds}))

    def query(self, query: AggregateQuery, *, quorum: int = 3,
              deadline_seconds: float | None = None, wait_seconds: float = 120.0,
              tier: DataTier = DataTier.STANDARDISED, check: bool = True) -> PooledResult:
        """Run a pooled query (idempotent per query id) and wait for it.

        Raises :class:`QueryFailedError` if it failed (unless ``check=False``); a query still
        running after ``wait_seconds`` is returned as it stands (poll with :meth:`result`).
        """
        body = _query_request(query, quorum, deadline_seconds, wait_seconds, tier)
        return _finished(PooledResult.model_validate(self._call("POST", "/queries",
                                                                json=body)), check)

    def balance(self, commodity: Commodity | str, period: str, *, epsilon: float = 1.0,
                **options: Any) -> Balance:
        """Pool a commodity balance (spends ``epsilon`` at every node; operator only).

        ``options``: the other fields of :class:`coordinator.BalanceRequest`
        (``unit_sum_bound``, ``stock_unit_bound``, ``min_contributors``, ``purpose``).
        """
        body = _balance_request(commodity, period, epsilon, options)
        return Balance.model_validate(self._call("POST", "/balances", json=body))

    def balance_frame(self, balance: Balance) -> polars.DataFrame:
        """:func:`balance_frame` (Polars)."""
        return balance_frame(balance)

    def balance_pandas(self, balance: Balance) -> pandas.DataFrame:
        """:func:`balance_pandas` (pandas)."""
        return balance_pandas(balance)


class AsyncClient(_Base):
    """Asynchronous client: the same methods as :class:`Client`, awaited."""

    def __init__(self, url: str, token: str, *, timeout: float = 300.0,
                 verify: ssl.SSLContext | bool = True,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(url, token)
        self._http = httpx.AsyncClient(base_url=self._base, headers=self._headers,
                                       timeout=timeout, verify=verify, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        _raise_for(response)
        return response.json()

    async def health(self) -> dict[str, str]:
        """See :meth:`Client.health`."""
        return dict(await self._call("GET", "/health"))

    async def nodes(self) -> list[NodeView]:
        """See :meth:`Client.nodes`."""
        return [NodeView.model_validate(n) for n in await self._call("GET", "/nodes")]

    async def queries(self, *, limit: int = 100) -> list[QuerySummary]:
        """See :meth:`Client.queries`."""
        return [QuerySummary.model_validate(q)
                for q in await self._call("GET", "/queries", params={"limit": limit})]

    async def result(self, query_id: str, *, wait_seconds: float = 0.0) -> PooledResult:
        """See :meth:`Client.result`."""
        return PooledResult.model_validate(await self._call(
            "GET", f"/queries/{query_id}", params={"wait_seconds": wait_seconds}))

    async def query(self, query: AggregateQuery, *, quorum: int = 3,
                    deadline_seconds: float | None = None, wait_seconds: float = 120.0,
                    tier: DataTier = DataTier.STANDARDISED, check: bool = True
                    ) -> PooledResult:
        """See :meth:`Client.query`."""
        body = _query_request(query, quorum, deadline_seconds, wait_seconds, tier)
        return _finished(PooledResult.model_validate(await self._call("POST", "/queries",
                                                                      json=body)), check)

    async def balance(self, commodity: Commodity | str, period: str, *, epsilon: float = 1.0,
                      **options: Any) -> Balance:
        """See :meth:`Client.balance`."""
        body = _balance_request(commodity, period, epsilon, options)
        return Balance.model_validate(await self._call("POST", "/balances", json=body))

    def balance_frame(self, balance: Balance) -> polars.DataFrame:
        """:func:`balance_frame` (Polars)."""
        return balance_frame(balance)

    def balance_pandas(self, balance: Balance) -> pandas.DataFrame:
        """:func:`balance_pandas` (pandas)."""
        return balance_pandas(balance)
