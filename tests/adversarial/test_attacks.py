"""Attacks: an operator or auditor hunting for records or one company's figure through every
route; repeated queries past the budget; the differencing attack; replayed, misaddressed,
expired and mis-kinded job envelopes sent to a node's agent (the coordinator side is in
tests/unit/coordinator).

Real code on both sides: three nodes pull their jobs from the coordinator app over an
in-process ASGI transport, as in tests/integration/test_pull_agent.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

import node
from coordinator import (
    BalanceFigure,
    BalanceRequest,
    CoordinatorContext,
    DifferencingRefusedError,
    balance_queries,
    create_app,
    finalize_query,
    init_coordinator,
    issue_enrolment_token,
    query_result,
    revoke_node,
    submit_query,
)
from coordinator._db import JobRow as CoordinatorJob
from coordinator._web._data import stored_balances
from node._db import ImportRow, RecordRow
from protocols import (
    COORDINATOR_ID,
    AggregateQuery,
    CoverageEntry,
    JobSpec,
    JobState,
    MessageKind,
    SignedAnswer,
    parse_period,
    seal_envelope,
)

URL = "http://coordinator.test"
NODES = ("miner-a", "miner-b", "miner-c")
YEAR_FLOWS = ["production", "export", "stock_level"]
REFUSAL = ("privacy budget exceeded: requested epsilon 1 per year, but 2024: 0.5 remaining; "
           "the release was refused and nothing was charged")


@dataclass
class Pool:
    hub: CoordinatorContext
    app: Any
    nodes: list[node.NodeContext]
    records: list[dict[str, Any]] = field(default_factory=list)

    def agent(self, context: node.NodeContext,
              transport: httpx.AsyncBaseTransport | None = None) -> node.PullAgent:
        enrolment = node.load_enrolment(context.home)
        assert enrolment is not None
        return node.PullAgent(context, enrolment,
                              transport=transport or httpx.ASGITransport(app=self.app))

    def drain(self, context: node.NodeContext) -> int:
        """Let the node's agent take and answer every job waiting for it; how many."""
        async def run() -> int:
            taken = 0
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app)) as c:
                agent = self.agent(context)
                while await agent.step(c) is not None:
                    taken += 1
            return taken
        return asyncio.run(run())

    def bearer(self, role: str) -> dict[str, str]:
        token = getattr(self.hub.settings, f"{role}_token").get_secret_value()
        return {"Authorization": f"Bearer {token}"}


def _record(node_index: int, n: int, *, period: str, flow: str, country: str,
            quantity: float) -> dict[str, Any]:
    p = parse_period(period)
    first, last = p.month_index
    return {
        "record_id": f"SECRET-REC-{node_index}-{n}", "period": period, "year": p.year,
        "first_month": first, "last_month": last, "commodity": "cobalt", "stage": "mining",
        "flow": flow, "country": country,
        "partner_country": "CHN" if flow == "export" else None, "quantity": quantity,
        "unit": "t", "basis": "contained", "quantity_t": quantity,
        "site_id": f"SECRET-SITE-{node_index}",
        "contribution_unit": f"site:SECRET-SITE-{node_index}",
    }


def _insert(context: node.NodeContext, rows: list[dict[str, Any]]) -> None:
    with context.engine.begin() as conn:
        import_id = conn.execute(ImportRow.__table__.insert().values(  # type: ignore[attr-defined]
            file_name="exports-2024.csv", sha256=uuid.uuid4().hex * 2, mapping_sha256="0" * 64,
            row_count=len(rows))).inserted_primary_key[0]
        conn.execute(RecordRow.__table__.insert(),  # type: ignore[attr-defined]
                     [{**r, "import_id": import_id} for r in rows])


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    monkeypatch.setenv("DPN_ADMIN_ALLOW_REMOTE", "1")  # the node's admin pages, worst case
    hub = init_coordinator(home=tmp_path / "coord", port=8799)
    app = create_app(hub)
    made = Pool(hub, app, [])
    with TestClient(app, base_url=URL) as client:
        for index, node_id in enumerate(NODES):
            countries = ["COD", "ZMB"] if index == 0 else ["COD"]
            policy = node.Policy(coverage=[CoverageEntry.model_validate({
                "commodity": "cobalt", "stages": ["mining"], "flows": YEAR_FLOWS,
                "countries": countries})])
            context = node.init_node(home=tmp_path / node_id, node_id=node_id,
                                     display_name=node_id.title(), policy=policy)
            context.settings.poll_wait_seconds = 0.1
            rows = [
                _record(index, 1, period="2024-03", flow="production", country="COD",
                        quantity=12_345.678 + 1_111.111 * index),
                _record(index, 2, period="2024-07", flow="export", country="COD",
                        quantity=4_321.987 + 222.222 * index),
                _record(index, 3, period="2023-12", flow="stock_level", country="COD",
                        quantity=765.432 + 11.111 * index),
                _record(index, 4, period="2024-12", flow="stock_level", country="COD",
                        quantity=876.543 + 11.111 * index),
            ]
            if index == 0:  # the only company in ZMB: its figure must stay hidden
                rows.append(_record(index, 5, period="2024-05", flow="production",
                                    country="ZMB", quantity=31_415.926))
            _insert(context, rows)
            made.records.extend(rows)
            token, _ = issue_enrolment_token(context=hub, node_id=node_id)
            node.enrol(context=context, coordinator_url=URL, token=token,
                       expected_coordinator_key_id=hub.key_id, client=client)
            made.nodes.append(context)
    yield made
    for context in made.nodes:
        context.engine.dispose()
    hub.engine.dispose()


def _query(**overrides: Any) -> AggregateQuery:
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD", "ZMB"],
        "group_by": ["country"], "epsilon": 1.0,
        "bounds": {"record_clip": 50_000.0, "unit_sum_bound": 50_000.0},
        "purpose": "adversarial test"}
    fields.update(overrides)
    return AggregateQuery.model_validate(fields)


# --------------------------------------------------------------------------- routes


def _routes(routes: list[Any]) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, including those of included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None) or getattr(route, "app", None)
        path = getattr(route, "path", None)
        if path is not None and getattr(route, "methods", None):
            for method in sorted(route.methods - {"HEAD"}):
                yield method, path
        elif inner is not None and hasattr(inner, "routes"):
            yield from _routes(list(inner.routes))


def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs()).encode("utf-8")


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


def _number_forms(value: float, *, html: bool) -> set[str]:
    forms = {repr(value), json.dumps(value), f"{value:.3f}"}
    if html and abs(value) >= 1000:  # as the dashboard prints figures
        forms |= {f"{value:,.0f}", f"{value:,.1f}", f"{value:,.2f}"}
    return forms


@dataclass
class Secrets:
    """What must not leave: records (ids, sites, quantities) and each company's own figures
    for the cells where it has data (each node's answer, cell by cell)."""

    words: set[str]
    numbers: set[float]
    published: set[str] = field(default_factory=set)  # forms published figures also take

    def found_in(self, text: str, *, html: bool) -> list[str]:
        hits = [w for w in self.words if w in text]
        for value in self.numbers:
            for form in _number_forms(value, html=html) - self.published:
                # "1,234" followed by ",567" is part of a longer number (e.g. "300,400,700")
                tail = r"(?![\d])(?!,\d)" if "," in form else r"(?![\d])"
                # After a comma a form is a list element ("[12.5,4567.25]"), unless it could
                # be a thousands group of a longer number: exactly three digits, no sign.
                group = "," not in form and re.fullmatch(r"\d{3}(\.\d*)?", form) is not None
                head = r"(?<![\d.,])" if "," in form or group else r"(?<![\d.])"
                if re.search(rf"{head}{re.escape(form)}{tail}", text):
                    hits.append(form)
        return hits


def _per_node_answers(pool: Pool) -> list[tuple[str, SignedAnswer]]:
    with Session(pool.hub.engine) as session:
        rows = session.exec(select(CoordinatorJob).where(
            CoordinatorJob.state == str(JobState.ANSWERED))).all()
        return [(r.node_id, SignedAnswer.model_validate_json(r.signed_answer_json or ""))
                for r in rows]


def _run_everything(pool: Pool) -> tuple[AggregateQuery, list[AggregateQuery]]:
    """A pooled query and a balance (flows and stocks queries), answered by all nodes."""
    plain = _query()
    balance = list(balance_queries(BalanceRequest.model_validate({
        "commodity": "cobalt", "period": "2024", "epsilon": 1.5, "unit_sum_bound": 50_000.0,
        "stock_unit_bound": 5_000.0, "purpose": "adversarial test"})))
    for q in (plain, *balance):
        submit_query(engine=pool.hub.engine, query=q, quorum=3, deadline_seconds=60)
    for context in pool.nodes:
        assert pool.drain(context) == 3
    for q in (plain, *balance):
        finalize_query(engine=pool.hub.engine, query_id=q.query_id)
    return plain, balance


def _secrets(pool: Pool, queries: list[AggregateQuery]) -> Secrets:
    words = {r["record_id"] for r in pool.records} | {r["site_id"] for r in pool.records}
    numbers = {float(r["quantity"]) for r in pool.records}
    by_id = {q.query_id: q for q in queries}
    answers = _per_node_answers(pool)
    assert len(answers) == 3 * len(queries)
    own: dict[tuple[str, tuple[str, ...]], list[float]] = {}  # (query, cell) -> answers
    for node_id, signed in answers:
        answer = signed.answer
        keys = by_id[answer.query_id].public_keys()
        held = {"COD", "ZMB"} if node_id == "miner-a" else {"COD"}
        for key, value in zip(keys, answer.sums or [], strict=True):
            own.setdefault((answer.query_id, tuple(key)), []).append(value)
            if key[0] in held:  # the company's figure for a cell where it has data
                numbers.add(value)
    # The figures the coordinator publishes (pooled cells, the balance page's figures and
    # error bars) are noisy numbers in the range of the nodes' own figures: shown rounded to
    # the tonne, one of them matched one of the ~170 secret numbers by chance in about 0.5%
    # of runs. A text a published figure (or its digits without the sign) takes is on the
    # page legitimately, so it is no evidence of a leak and is not searched for; except a
    # published cell equal to a node's own answer for that cell (e.g. a one-company cell
    # published: a leak), which a correct pool shows by chance with probability ~1e-7.
    figures: list[float | None] = []
    withheld: list[float] = []
    for q in queries:
        for c in query_result(engine=pool.hub.engine, query_id=q.query_id).cells:
            answered = own.get((q.query_id, tuple(c.key)), [])
            if c.value is not None and any(abs(c.value - v) < 0.0005 for v in answered):
                withheld.append(c.value)
            else:
                figures.append(c.value)
            figures += [c.std, c.ci95]
    figures += [v for b in stored_balances(engine=pool.hub.engine) for row in b.rows
                for _, f in row if isinstance(f, BalanceFigure)
                for v in (f.value, f.std, f.ci95)
                if v is None or not any(abs(v - w) < 0.0005 for w in withheld)]
    published = {form for v in figures if v is not None for w in (v, -v)
                 for form in _number_forms(w, html=True) | _number_forms(w, html=False)}
    return Secrets(words, numbers, published)


def test_no_route_gives_the_operator_or_an_auditor_records_or_one_companys_figure(
    pool: Pool,
) -> None:
    plain, balance = _run_everything(pool)
    result = query_result(engine=pool.hub.engine, query_id=plain.query_id)
    cells = {tuple(c.key): c for c in result.cells}
    assert cells[("COD",)].status == "published" and cells[("COD",)].value is not None
    assert cells[("ZMB",)].status == "suppressed" and cells[("ZMB",)].value is None
    secrets = _secrets(pool, [plain, *balance])
    # The detector sees a company's figures in the forms a leak would take.
    own = next(a for n, a in _per_node_answers(pool) if a.answer.query_id == plain.query_id)
    assert secrets.found_in(own.model_dump_json(), html=False)
    big = next(v for v in secrets.numbers if abs(v) >= 1000
               and f"{v:,.0f}" not in secrets.published)
    assert secrets.found_in(f"<td>{big:,.0f}</td>", html=True)
    # also as a later element of a compact JSON list, and not inside a longer number
    assert secrets.found_in(json.dumps([1.5, 2.5, big], separators=(",", ":")), html=False)
    assert not Secrets(set(), {567.0}).found_in("<td>1,567.0</td> 12,567.000", html=True)
    assert not secrets.found_in(json.dumps(result.model_dump(mode="json")), html=False)

    values = {"query_id": plain.query_id, "node_id": "miner-a", "commodity": "cobalt",
              "period": "2024", "job_id": uuid.uuid4().hex}
    routes = sorted(set(_routes(list(pool.app.routes))))
    assert ("GET", "/v1/queries/{query_id}") in routes and ("GET", "/ui/audit") in routes
    checked: list[tuple[str, str, str, int]] = []
    leaks: list[str] = []
    for role in ("operator", "auditor", None):
        with TestClient(pool.app, base_url=URL) as client:
            headers = pool.bearer(role) if role else {}
            if role:  # the dashboard's session cookie, from the same token
                token = headers["Authorization"].removeprefix("Bearer ")
                signed_in = client.post("/ui/login", data={"token": token, "next": "/ui/"},
                                        follow_redirects=False)
                assert signed_in.status_code == 303, signed_in.text
            for method, path in routes:
                if path in ("/ui/login", "/ui/logout") and method == "POST":
                    continue  # signing in and out: exercised above
                url = _fill(path, values)
                if "/static/" in path:  # a library file: the same bytes whatever the data
                    response = client.get(url)
                    assert response.content == _plotly_js()
                    checked.append((str(role), method, path, response.status_code))
                    continue
                extra: dict[str, Any] = {}
                if method == "POST":
                    # The operator may resubmit a query it ran: it gets the pooled figures.
                    extra["json"] = ({"query": plain.model_dump(mode="json"), "quorum": 3}
                                     if path == "/v1/queries" else {})
                if method == "GET" and path == "/v1/queries":
                    extra["params"] = {"limit": 1000}
                response = client.request(method, url, headers=headers,
                                          follow_redirects=False, **extra)
                checked.append((str(role), method, path, response.status_code))
                html = "text/html" in response.headers.get("content-type", "")
                hits = secrets.found_in(response.text, html=html)
                if hits:
                    leaks.append(f"{role} {method} {url} -> {response.status_code}: {hits[:5]}")
    assert not leaks, "\n".join(leaks)
    # The check looked at real content: the figures and pages were served to both roles.
    served = {(role, path) for role, _, path, status in checked if status == 200}
    for role in ("operator", "auditor"):
        assert {(role, "/v1/queries/{query_id}"), (role, "/ui/"), (role, "/ui/audit"),
                (role, "/ui/balances/{commodity}/{period}"), (role, "/v1/nodes"),
                (role, "/v1/queries")} <= served
    assert ("operator", "/v1/queries") in served  # the resubmission above
    assert not {path for role, _, path, status in checked
                if role == "None" and status == 200} - {
        "/v1/health", "/v1/info", "/v1/ready", "/metrics", "/ui/login",
        "/ui/static/plotly.min.js", "/docs", "/redoc", "/openapi.json",
        "/docs/oauth2-redirect"}


def test_no_node_route_serves_records(pool: Pool) -> None:
    owner = pool.nodes[0]
    plain, _ = _run_everything(pool)
    secrets = Secrets({r["record_id"] for r in pool.records if r["record_id"].startswith(
        "SECRET-REC-0-")} | {"SECRET-SITE-0"},
        {float(r["quantity"]) for r in pool.records if r["site_id"] == "SECRET-SITE-0"})
    app = node.create_app(owner, run_agent=False)
    token = owner.settings.access_token.get_secret_value()
    routes = sorted(set(_routes(list(app.routes))))
    assert ("GET", "/v1/budget") in routes and ("GET", "/admin/") in routes
    served, leaks = set(), []
    with TestClient(app) as client:
        signed_in = client.post("/admin/login", data={"token": token, "next": "/admin/"},
                                follow_redirects=False)
        assert signed_in.status_code == 303, signed_in.text
        for method, path in routes:
            if method == "POST" and path.startswith("/admin/"):
                continue  # sign-in, approve and deny: forms, not reads
            if "/static/" in path:
                assert client.get(path).content == _plotly_js()
                continue
            extra: dict[str, Any] = {}
            if method == "POST":  # a release: DP figures only, never a record
                extra["json"] = plain.model_dump(mode="json")
            response = client.request(method, _fill(path, {}), **extra,
                                      headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 200:
                served.add(path)
            html = "text/html" in response.headers.get("content-type", "")
            hits = secrets.found_in(response.text, html=html)
            if hits:
                leaks.append(f"{method} {path}: {hits[:5]}")
    assert not leaks, "\n".join(leaks)
    assert {"/v1/budget", "/v1/queries", "/admin/", "/metrics", "/v1/info"} <= served


# --------------------------------------------------------------------------- the budget


def test_repeating_a_query_past_the_budget_is_refused_with_requested_and_remaining(
    pool: Pool,
) -> None:
    # The operator asks the same question again and again, with fresh query ids, hoping to
    # average the noise away. The node answers while its budget lasts, then refuses.
    target = pool.nodes[1]
    target.policy.budget.epsilon_per_year = 2.5
    queries = [_query(countries=["COD"]) for _ in range(5)]
    for q in queries:
        submit_query(engine=pool.hub.engine, query=q, quorum=1, deadline_seconds=60)
        assert pool.drain(target) == 1
    outcomes = [next(o for o in query_result(engine=pool.hub.engine, query_id=q.query_id).nodes
                     if o.node_id == target.settings.node_id) for q in queries]
    assert [o.status for o in outcomes] == ["answered"] * 2 + ["budget_exceeded"] * 3
    for outcome in outcomes[2:]:
        assert outcome.message == REFUSAL
        assert outcome.epsilon is None
    spent = {b.year: b.spent for b in node.budget_status(
        engine=target.engine, epsilon_per_year=target.policy.budget.epsilon_per_year)}
    assert spent == {2024: 2.0}

    # The operator sees the refusal and why, through the API, as the auditor does.
    with TestClient(pool.app, base_url=URL) as client:
        for role in ("operator", "auditor"):
            shown = client.get(f"/v1/queries/{queries[-1].query_id}", headers=pool.bearer(role))
            assert shown.status_code == 200
            mine = next(n for n in shown.json()["nodes"]
                        if n["node_id"] == target.settings.node_id)
            assert mine["status"] == "budget_exceeded"
            assert mine["message"] == REFUSAL

    # Asking the node directly (push mode credential) is refused the same way, with figures.
    with TestClient(node.create_app(target, run_agent=False)) as client:
        token = target.settings.access_token.get_secret_value()
        again = client.post("/v1/queries", json=_query(countries=["COD"]).model_dump(
            mode="json"), headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 403
    assert again.json()["error"] == "budget_exceeded"
    assert again.json()["detail"] == {"requested": 1.0, "remaining": {"2024": 0.5}}
    assert spent == {b.year: b.spent for b in node.budget_status(
        engine=target.engine, epsilon_per_year=2.5)}


# --------------------------------------------------------------------------- differencing


def test_the_differencing_attack_is_refused_at_the_coordinator_and_at_the_nodes(
    pool: Pool,
) -> None:
    # The operator publishes COD production over all three companies, then tries to get the
    # same cell over all but miner-c, to subtract the two and isolate miner-c's figure.
    first = _query(countries=["COD"])
    submit_query(engine=pool.hub.engine, query=first, quorum=3, deadline_seconds=60)
    for context in pool.nodes:
        assert pool.drain(context) == 1
    finalize_query(engine=pool.hub.engine, query_id=first.query_id)
    (cell,) = query_result(engine=pool.hub.engine, query_id=first.query_id).cells
    assert cell.status == "published"

    # Without one company: the coordinator refuses at submission and names who would leak.
    revoke_node(context=pool.hub, node_id="miner-c")
    with pytest.raises(DifferencingRefusedError, match="only by miner-c"):
        submit_query(engine=pool.hub.engine, query=_query(countries=["COD"]), quorum=2,
                     deadline_seconds=60)
    # A coordinator that skips its own check still meets each node's guard: the job's
    # participant list differs from the set miner-a already answered for by one node.
    victim_peer = pool.nodes[0]
    spent_before = node.budget_status(engine=victim_peer.engine, epsilon_per_year=10.0)
    with pytest.raises(node.QueryRefusedError, match="only by miner-c") as refused:
        node.answer_query(context=victim_peer, query=_query(countries=["COD"]),
                          origin=node.ReleaseOrigin(participants=("miner-a", "miner-b")))
    assert refused.value.rule == "differencing"
    assert node.budget_status(engine=victim_peer.engine, epsilon_per_year=10.0
                              ) == spent_before  # refused before anything was charged

    # With the same company set the question may be asked again (no one is isolated).
    again = node.answer_query(context=victim_peer, query=_query(countries=["COD"]),
                              origin=node.ReleaseOrigin(
                                  participants=("miner-a", "miner-b", "miner-c")))
    assert again.receipt is not None


# --------------------------------------------------------------------------- node-side envelopes


class _Recorder(httpx.AsyncBaseTransport):
    """Passes requests to the coordinator app and keeps the envelopes of delivered jobs."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.jobs: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if request.url.path.endswith("/jobs/poll") and response.status_code == 200:
            self.jobs.append(body)
        return httpx.Response(response.status_code, headers=response.headers, content=body)


def _poll_with(pool: Pool, context: node.NodeContext, content: bytes) -> JobSpec | None:
    """A fresh agent (as after a restart) whose poll gets ``content`` as the answer."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=content,
                              headers={"content-type": "application/json"})

    async def run() -> JobSpec | None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            return await pool.agent(context)._poll(client)
    return asyncio.run(run())


def test_a_replayed_job_envelope_is_refused_by_the_node_even_after_a_restart(
    pool: Pool, caplog: pytest.LogCaptureFixture,
) -> None:
    first = pool.nodes[0]
    q = _query(countries=["COD"])
    submit_query(engine=pool.hub.engine, query=q, quorum=1, deadline_seconds=60)
    recorder = _Recorder(pool.app)

    async def take() -> None:
        async with httpx.AsyncClient(transport=recorder) as client:
            assert await pool.agent(first, transport=recorder).step(client) is not None
    asyncio.run(take())
    assert len(recorder.jobs) == 1
    jobs_before = node.list_jobs(engine=first.engine)
    assert [j.state for j in jobs_before] == [JobState.ANSWERED]
    spent_before = node.budget_status(engine=first.engine, epsilon_per_year=10.0)

    with caplog.at_level(logging.WARNING, logger="node.agent"), pytest.raises(
            node.CoordinatorError, match=r"replays nonce [0-9a-f]{32}"):
        _poll_with(pool, first, recorder.jobs[0])
    assert "refused a message from the coordinator" in caplog.text
    assert node.list_jobs(engine=first.engine) == jobs_before
    assert node.budget_status(engine=first.engine, epsilon_per_year=10.0) == spent_before


@pytest.mark.parametrize("attack", ["misaddressed", "expired", "wrong_kind", "not_json"])
def test_a_bad_job_envelope_is_refused_by_the_node(
    pool: Pool, attack: str, caplog: pytest.LogCaptureFixture,
) -> None:
    # Signed with the real coordinator key (as if stolen off the wire or replayed from
    # another node's traffic): only the addressing, the time or the kind is wrong.
    first = pool.nodes[0]
    spec = JobSpec(job_id=uuid.uuid4().hex, query=_query(countries=["COD"]), requester="op",
                   deadline=datetime.now(UTC) + timedelta(minutes=5))
    seal: dict[str, Any] = {"recipient": first.settings.node_id, "kind": MessageKind.JOB}
    expected = {"misaddressed": re.escape("addressed to 'miner-b', not 'miner-a'"),
                "expired": re.escape("more than 300 s from now"),
                "wrong_kind": r"envelope of kind .*ack.* where job, secagg_job was expected",
                "not_json": re.escape("refused a message from the coordinator")}[attack]
    if attack == "misaddressed":
        seal["recipient"] = "miner-b"
    elif attack == "expired":
        seal["now"] = datetime.now(UTC) - timedelta(minutes=10)
    elif attack == "wrong_kind":
        seal["kind"] = MessageKind.ACK
    content = (b"<html>502 Bad Gateway</html>" if attack == "not_json" else
               seal_envelope(pool.hub.private_key, sender=COORDINATOR_ID,
                             body=spec.model_dump(mode="json"),
                             **seal).model_dump_json().encode("utf-8"))
    with caplog.at_level(logging.WARNING, logger="node.agent"), pytest.raises(
            node.CoordinatorError, match=expected):
        _poll_with(pool, first, content)
    assert "refused a message from the coordinator" in caplog.text
    assert node.list_jobs(engine=first.engine) == []
    assert node.budget_status(engine=first.engine, epsilon_per_year=10.0) == []
