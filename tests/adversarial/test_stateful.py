"""Stateful fuzzing of a node: random sequences of imports, releases and approvals.

A Hypothesis state machine drives one node in process: its HTTP API (push releases with
random epsilon, repeated and reused query ids, malformed requests, the budget, the metrics,
the admin page's approve and deny forms) and what its agent does with jobs (record a job,
run it). Imports go through ``ingest_file`` (the node has no import route), good files and
bad ones. After every step:

* no answer is a 5xx, and none carries a stack trace or a server path;
* ``GET /v1/budget``: spent never exceeds the total, and the spent epsilon of every year is
  what the distinct query ids released so far cost (each counted once), recomputed here with
  ``protocols``' accounting: their sum while that binds, zCDP composition when tighter;
* ``GET /metrics``: the node counts exactly one release per distinct released query id;
* a repeated query id returns the identical signed answer and charges nothing.

The budget is read only through the API: its internals are being reworked.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

import node
from crimmis_dpn.reliability import leak_in
from protocols import (
    BudgetLimit,
    CoverageEntry,
    JobSpec,
    JobState,
    PrivacyCost,
    Spend,
    guarantee,
)

TOTAL = 2.0  # epsilon per year
MAX_RELEASE = 1.0  # epsilon per release
MANUAL_ABOVE = 0.5  # jobs asking for more are held for approval
TOLERANCE = 1e-6
LIMIT = BudgetLimit(epsilon=TOTAL, delta=1e-6)  # the node's default delta
COVERAGE = [CoverageEntry.model_validate({"commodity": "cobalt", "stages": ["mining"],
                                          "flows": ["production", "export"],
                                          "countries": ["COD", "ZMB"]})]
HEADER = "record_id,period,commodity,flow,country,partner_country,quantity,unit,site_id"
MAPPING = node.Mapping.model_validate({
    "columns": {name: name for name in HEADER.split(",")},
    "constants": {"stage": "mining", "basis": "contained"}})
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_RELEASES = re.compile(r"^dpn_node_releases (\S+)$", re.MULTILINE)


@dataclass
class Sent:
    """A query sent to the node and what became of it."""

    body: dict[str, Any]
    status: int
    error: str | None = None


@dataclass
class Released:
    epsilon: float
    years: list[int]
    body: dict[str, Any]  # the query as released
    answer: dict[str, Any] | None = None  # the signed answer, once seen through the API


@dataclass
class Held:
    job_id: str
    query: dict[str, Any]


@dataclass
class Model:
    released: dict[str, Released] = field(default_factory=dict)
    records: int = 0
    next_record: int = 0
    files: int = 0
    held_jobs: set[str] = field(default_factory=set)


def _query(query_id: str, epsilon: float, periods: list[str], kind: str,
           purpose: str = "stateful fuzzing") -> dict[str, Any]:
    return {"query_id": query_id, "kind": kind, "commodities": ["cobalt"],
            "flows": ["production", "export"], "periods": periods,
            "countries": ["COD", "ZMB"], "group_by": ["country"], "epsilon": epsilon,
            "bounds": {"record_clip": 1000.0, "unit_sum_bound": 2000.0}, "purpose": purpose}


def _years(periods: list[str]) -> list[int]:
    return sorted({int(p[:4]) for p in periods})


epsilons = st.one_of(
    st.floats(min_value=0.01, max_value=MAX_RELEASE).map(lambda e: round(e, 3)),
    st.sampled_from([0.25, 0.5, 1.0]),  # sums that hit the total exactly
    st.sampled_from([MAX_RELEASE + 0.5]),  # over the per-release maximum: refused by policy
)
period_sets = st.sampled_from([["2024"], ["2023"], ["2023", "2024"], ["2024-03", "2024-04"]])
kinds = st.sampled_from(["sum", "count"])


class NodeMachine(RuleBasedStateMachine):
    """One node home per example (see the module docstring)."""

    queries = Bundle("queries")
    held = Bundle("held")
    decided = Bundle("decided")

    def __init__(self) -> None:
        super().__init__()
        self.scratch = Path(tempfile.mkdtemp(prefix="dpn-stateful-"))
        self.context = node.init_node(
            home=self.scratch / "node", node_id="stateful-node", display_name="Stateful",
            policy=node.Policy(
                budget=node.BudgetPolicy(epsilon_per_year=TOTAL,
                                         max_epsilon_per_release=MAX_RELEASE),
                approval=node.ApprovalPolicy(rules=[node.ApprovalRule(
                    mode="manual", epsilon_above=MANUAL_ABOVE)]),
                coverage=COVERAGE))
        self.client = TestClient(node.create_app(self.context, run_agent=False),
                                 raise_server_exceptions=False, client=("127.0.0.1", 50000))
        self.auth = {"Authorization":
                     f"Bearer {self.context.settings.access_token.get_secret_value()}"}
        self.model = Model()
        self.csrf: str | None = None
        self.ids = itertools.count(1)

    def fresh_id(self) -> str:
        """A new query or job id; not random, so Hypothesis replays a test case exactly."""
        return f"{next(self.ids):032x}"

    def teardown(self) -> None:
        self.client.close()
        self.context.engine.dispose()
        shutil.rmtree(self.scratch, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code < 500, f"{method} {path}: {response.status_code} " \
                                            f"{response.text[:2000]}"
        leak = leak_in(response.text, [str(self.scratch)])
        assert leak is None, f"{method} {path}: {leak}"
        return response

    def budget(self) -> dict[int, dict[str, float]]:
        response = self.call("GET", "/v1/budget", headers=self.auth)
        assert response.status_code == 200, response.text
        return {int(row["year"]): row for row in response.json()}

    def remaining(self, years: list[int]) -> dict[int, float]:
        current = self.budget()
        return {y: float(current[y]["remaining"]) if y in current else TOTAL for y in years}

    def expected_spend(self) -> dict[int, Spend]:
        """Per year, the exact spend of the distinct released query ids (independently of
        the node's accounts)."""
        spend: dict[int, Spend] = {}
        for release in self.model.released.values():
            for year in release.years:
                spend[year] = spend.get(year, Spend()) + Spend.of(
                    PrivacyCost(epsilon=release.epsilon))
        return spend

    def expected_spent(self) -> dict[int, float]:
        """Per year, the proven epsilon of those releases (the sum of their epsilons while
        that is the tighter bound; zCDP composition when many small releases make it so)."""
        return {year: guarantee(s, delta=LIMIT.delta)
                for year, s in self.expected_spend().items()}

    def write(self, name: str, text: str | bytes) -> Path:
        self.model.files += 1
        path = self.scratch / f"{self.model.files:03d}-{name}"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def records(self) -> int:
        return node.data_summary(engine=self.context.engine,
                                 coverage=self.context.policy.coverage).records

    def release(self, body: dict[str, Any]) -> Sent:
        """POST a query; check the outcome against the budget the API showed just before."""
        epsilon, years = float(body["epsilon"]), _years(body["periods"])
        query_id = body["query_id"]
        before = self.remaining(years)
        earlier = self.model.released.get(query_id)
        response = self.call("POST", "/v1/queries", json=body, headers=self.auth)
        payload = response.json()
        event(f"query: {'known id' if earlier else 'new id'}, {response.status_code} "
              f"{payload.get('error', '')}")
        if earlier is not None:  # a released query id: the stored answer, or refused
            if body == earlier.body:
                assert response.status_code == 200, payload
                if earlier.answer is not None:
                    assert payload == earlier.answer  # identical, signature and noise included
                earlier.answer = payload
            else:  # the policy is checked first, then the id
                assert response.status_code == 403, payload
                assert payload["error"] == "query_refused", payload
                if epsilon <= MAX_RELEASE:
                    assert payload["detail"]["rule"] == "query_id", payload
            return Sent(body, response.status_code, payload.get("error")
                        if response.status_code != 200 else None)
        if epsilon > MAX_RELEASE:
            assert response.status_code == 403 and payload["error"] == "query_refused", payload
            return Sent(body, 403, "query_refused")
        fits = all(before[y] >= epsilon + TOLERANCE for y in years)
        short = any(before[y] < epsilon - TOLERANCE for y in years)
        if response.status_code == 200:
            assert not short, (before, epsilon, payload)
            assert payload["answer"]["query_id"] == query_id
            assert math.isclose(payload["answer"]["epsilon"], epsilon)
            self.model.released[query_id] = Released(epsilon, years, body, payload)
            return Sent(body, 200)
        assert response.status_code == 403, payload
        assert payload["error"] == "budget_exceeded", payload
        assert not fits, (before, epsilon, payload)
        assert math.isclose(payload["detail"]["requested"], epsilon)
        return Sent(body, 403, "budget_exceeded")

    def login(self) -> str:
        if self.csrf is None:
            response = self.call("POST", "/admin/login", data={
                "token": self.context.settings.access_token.get_secret_value()},
                follow_redirects=False)
            assert response.status_code == 303, response.text
            page = self.call("GET", "/admin/")
            found = _CSRF.search(page.text)
            assert found is not None, page.text[:500]
            self.csrf = found.group(1)
        return self.csrf

    def after_job(self, job_id: str, query: dict[str, Any]) -> None:
        """Record what a finished job released (seen through the API: a push of the same
        query must return the stored answer and charge nothing)."""
        [row] = [r for r in node.list_jobs(engine=self.context.engine) if r.job_id == job_id]
        event(f"job ran: {row.state} {row.outcome_reason or ''}")
        query_id = query["query_id"]
        if row.state == JobState.ANSWERED and query_id not in self.model.released:
            self.model.released[query_id] = Released(float(query["epsilon"]),
                                                     _years(query["periods"]), query)
        elif row.state == JobState.REFUSED:
            assert row.outcome_reason in ("budget_exceeded", "query_refused"), row
        if query_id in self.model.released:
            self.release(query)  # identical answer, no charge (checked by the invariants)

    # --- rules ------------------------------------------------------------------------

    @initialize()
    def first_import(self) -> None:
        self.import_good(24)

    @rule(rows=st.integers(min_value=1, max_value=30))
    def import_good(self, rows: int) -> None:
        lines = [HEADER]
        for _ in range(rows):
            i = self.model.next_record
            self.model.next_record += 1
            year, flow = 2023 + i % 2, "export" if i % 4 == 0 else "production"
            lines.append(f"S-{i},{year}-{i % 12 + 1:02d},cobalt,{flow},"
                         f"{'COD' if i % 3 else 'ZMB'},{'CHN' if flow == 'export' else ''},"
                         f"{(i * 37) % 900 + 1},t,site-{i % 7}")
        report = node.ingest_file(engine=self.context.engine,
                                  path=self.write("good.csv", "\n".join(lines) + "\n"),
                                  mapping=MAPPING)
        assert (report.rows_imported, report.already_imported) == (rows, False)
        self.model.records += rows
        assert self.records() == self.model.records

    @rule(kind=st.sampled_from(["negative", "country", "empty", "binary", "repeat_id",
                                "header_only", "columns"]))
    def import_bad(self, kind: str) -> None:
        good = "S-new-{n},2024-01,cobalt,production,COD,,5,t,site-1"
        n = self.model.files
        contents: dict[str, str | bytes] = {
            "negative": f"{HEADER}\n{good.format(n=n).replace(',5,', ',-5,')}\n",
            "country": f"{HEADER}\n{good.format(n=n).replace('COD', 'CD')}\n",
            "empty": "",
            "binary": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
            "repeat_id": f"{HEADER}\n{good.format(n=n)}\nS-0,2024-02,cobalt,production,COD,"
                         ",5,t,site-1\n",
            "header_only": f"{HEADER}\n",
            "columns": "a,b,c\n1,2,3\n",
        }
        path = self.write(f"bad-{kind}.csv", contents[kind])
        event(f"bad import: {kind}")
        with pytest.raises(node.IngestError) as info:
            node.ingest_file(engine=self.context.engine, path=path, mapping=MAPPING)
        assert {p.file for p in info.value.problems} == {path.name}
        assert self.records() == self.model.records  # atomic: nothing of it stored

    @rule(target=queries, epsilon=epsilons, periods=period_sets, kind=kinds)
    def push_query(self, epsilon: float, periods: list[str], kind: str) -> Sent:
        return self.release(_query(self.fresh_id(), epsilon, periods, kind))

    @rule(sent=queries)
    def repeat_query(self, sent: Sent) -> None:
        again = self.release(sent.body)
        if sent.body["query_id"] not in self.model.released:
            # never released: refused again for the same reason (spent only grows)
            assert (again.status, again.error) == (sent.status, sent.error)

    @rule(sent=queries, epsilon=epsilons)
    def reuse_query_id(self, sent: Sent, epsilon: float) -> None:
        changed = {**sent.body, "epsilon": epsilon, "purpose": "a different question"}
        self.release(changed)

    @rule(bad=st.sampled_from([
        {"epsilon": 0.0}, {"epsilon": -0.5}, {"epsilon": "NaN"}, {"query_id": "x"},
        {"periods": ["2024-13"]}, {"countries": ["XXX"]}, {"kind": "median"},
        {"group_by": ["record_id"]}, {"bounds": {"record_clip": -1}}]))
    def malformed_query(self, bad: dict[str, Any]) -> None:
        body = {**_query(self.fresh_id(), 0.1, ["2024"], "sum"), **bad}
        response = self.call("POST", "/v1/queries", json=body, headers=self.auth)
        assert response.status_code in (400, 403, 422), response.text

    @rule(headers=st.sampled_from([{}, {"Authorization": "Bearer " + "w" * 40},
                                   {"Authorization": "Basic x"}]))
    def without_the_token(self, headers: dict[str, str]) -> None:
        body = _query(self.fresh_id(), 0.1, ["2024"], "sum")
        assert self.call("POST", "/v1/queries", json=body, headers=headers
                         ).status_code == 401
        assert self.call("GET", "/v1/budget", headers=headers).status_code == 401

    @rule(target=held, epsilon=epsilons, periods=period_sets, reuse=st.booleans(),
          data=st.data())
    def job(self, epsilon: float, periods: list[str], reuse: bool, data: st.DataObject
            ) -> Any:
        """A job as the agent records it: refused, held for approval, or run at once."""
        if reuse and self.model.released:
            query_id = data.draw(st.sampled_from(sorted(self.model.released)))
            query = dict(self.model.released[query_id].body)
            if data.draw(st.booleans()):
                query["purpose"] = "the same id for another question"
        else:
            query = _query(self.fresh_id(), epsilon, periods, "sum")
        spec = JobSpec.model_validate({
            "job_id": self.fresh_id(), "query": query, "requester": "fuzz",
            "deadline": datetime.now(UTC) + timedelta(hours=1)})
        row = node.receive_job(context=self.context, spec=spec)
        event(f"job: {row.state}")
        if row.state == JobState.AWAITING_APPROVAL:
            assert float(query["epsilon"]) > MANUAL_ABOVE
            return Held(spec.job_id, query)
        if row.state == JobState.RUNNING:
            node.run_job(context=self.context, job_id=spec.job_id)
            self.after_job(spec.job_id, query)
        else:
            assert row.state == JobState.REFUSED and float(query["epsilon"]) > MAX_RELEASE
        return multiple()

    @rule(target=decided, job=consumes(held), approve=st.booleans())
    def decide(self, job: Held, approve: bool) -> Held:
        action = "approve" if approve else "deny"
        response = self.call("POST", f"/admin/jobs/{job.job_id}/{action}",
                             data={"csrf": self.login(), "reason": "fuzz says no"},
                             follow_redirects=False)
        assert response.status_code == 303 and "done=" in response.headers["location"], \
            response.headers.get("location")
        if approve:
            node.run_job(context=self.context, job_id=job.job_id)
            self.after_job(job.job_id, job.query)
        else:
            [row] = [r for r in node.list_jobs(engine=self.context.engine)
                     if r.job_id == job.job_id]
            assert row.state == JobState.REFUSED
        return job

    @rule(job=decided, approve=st.booleans())
    def decide_again(self, job: Held, approve: bool) -> None:
        action = "approve" if approve else "deny"
        response = self.call("POST", f"/admin/jobs/{job.job_id}/{action}",
                             data={"csrf": self.login()}, follow_redirects=False)
        assert response.status_code == 303 and "error=" in response.headers["location"]

    @rule(job_id=st.sampled_from(["0" * 32, "not-a-job"]))
    def decide_unknown(self, job_id: str) -> None:
        response = self.call("POST", f"/admin/jobs/{job_id}/approve",
                             data={"csrf": self.login()}, follow_redirects=False)
        assert response.status_code in (303, 404), response.text
        bad_csrf = self.call("POST", f"/admin/jobs/{job_id}/deny", data={"csrf": "forged"},
                             follow_redirects=False)
        assert bad_csrf.status_code == 403

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def budget_matches_the_releases(self) -> None:
        shown = self.budget()
        expected = self.expected_spent()
        for year, row in shown.items():
            assert float(row["spent"]) <= float(row["total"]) + TOLERANCE, row
            assert math.isclose(float(row["total"]), TOTAL), row
            assert math.isclose(float(row["spent"]), expected.get(year, 0.0),
                                abs_tol=TOLERANCE), (year, row, expected)
            assert math.isclose(float(row["remaining"]),
                                LIMIT.remaining(self.expected_spend().get(year, Spend())),
                                abs_tol=TOLERANCE)
        for year, value in expected.items():
            assert year in shown or value == 0.0, (year, shown)

    @invariant()
    def one_release_per_query_id(self) -> None:
        text = self.call("GET", "/metrics").text
        found = _RELEASES.search(text)
        assert found is not None, text[:500]
        assert float(found.group(1)) == len(self.model.released)


NodeMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_node_state_machine = NodeMachine.TestCase
