"""The web pages end to end: a real pool (a coordinator and four pull nodes, each its own
process) driven by headless Chromium (Debian's /usr/bin/chromium through Playwright).

Set ``DPN_SCREENSHOTS_DIR=docs/screenshots`` to refresh the screenshots of docs/web.md.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import node
from coordinator import BalanceRequest, TokenRequest, init_coordinator
from crimmis_dpn._client import CoordinatorClient
from crimmis_dpn._processes import ServiceProcess, free_port, running, start_service
from protocols import AggregateQuery, CoverageEntry
from tests.unit.node.conftest import insert_records, make_record

pytestmark = pytest.mark.processes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"],
                          flows=["production", "export", "stock_level"],
                          countries=["COD", "ZMB"])]
HELD_APPROVE = "held for approval: quarterly review"
HELD_DENY = "held for approval: ad-hoc request"


@dataclass
class Pool:
    coordinator: ServiceProcess
    nodes: dict[str, ServiceProcess]
    client: CoordinatorClient
    operator_token: str
    auditor_token: str
    node_token: str
    held: dict[str, str]  # purpose -> query id
    homes: dict[str, Path]  # node id -> node home


def _records(index: int) -> list[dict[str, object]]:
    rows = []
    for country, scale in (("COD", 100.0), ("ZMB", 30.0)):
        unit = f"site:{country}-{index}"
        for month in range(1, 13):
            rows.append(make_record(f"p{country}{index}-{month}", period=f"2024-{month:02d}",
                                    country=country, quantity_t=scale * (index + 1), unit=unit))
            rows.append(make_record(f"e{country}{index}-{month}", period=f"2024-{month:02d}",
                                    country=country, flow="export", partner="CHN",
                                    quantity_t=scale / 2, unit=unit))
        rows.append(make_record(f"s{country}{index}-23", period="2023-12", country=country,
                                flow="stock_level", quantity_t=scale * 2, unit=unit))
        rows.append(make_record(f"s{country}{index}-24", period="2024-12", country=country,
                                flow="stock_level", quantity_t=scale * 2.6, unit=unit))
    return rows


def _count_query(epsilon: float, purpose: str) -> AggregateQuery:
    return AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "count", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "group_by": ["country"],
        "epsilon": epsilon, "bounds": {"record_clip": 5000.0, "unit_sum_bound": 5000.0},
        "purpose": purpose})


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    home = tmp_path_factory.mktemp("webpool")
    logs = home / "logs"
    logs.mkdir()
    hub = init_coordinator(home=home / "coordinator", port=free_port())
    hub.engine.dispose()
    operator = hub.settings.operator_token.get_secret_value()
    coordinator = start_service("coordinator", ["coordinator", "serve", "--home", str(hub.home)],
                                port=hub.settings.port, log_dir=logs)
    with running([coordinator]):
        client = CoordinatorClient(coordinator.url, operator)
        contexts = []
        for index in range(4):
            approval = node.ApprovalPolicy(rules=[node.ApprovalRule(mode="manual",
                                                                    kinds=["count"])])
            context = node.init_node(
                home=home / f"n{index}", node_id=f"miner-{index}",
                display_name=f"Miner {index}", port=free_port(),
                policy=node.Policy(coverage=COVERAGE, approval=approval))
            insert_records(context, _records(index))
            token = client.enrolment_token(TokenRequest(node_id=context.settings.node_id))
            node.enrol(context=context, coordinator_url=coordinator.url, token=token.token,
                       expected_coordinator_key_id=hub.key_id)
            context.engine.dispose()
            contexts.append(context)
        nodes = {c.settings.node_id: start_service(c.settings.node_id,
                                                   ["node", "serve", "--home", str(c.home)],
                                                   port=c.settings.port, log_dir=logs)
                 for c in contexts}
        with running(list(nodes.values())):
            client.balance(BalanceRequest(commodity="cobalt", period="2024", epsilon=3.0,
                                          unit_sum_bound=2000.0, stock_unit_bound=400.0))
            held = {}
            for purpose in (HELD_APPROVE, HELD_DENY):
                q = _count_query(0.8, purpose)  # counts: every node holds them for approval
                client._request("POST", "/queries", json={
                    "query": q.model_dump(mode="json"), "quorum": 1, "deadline_seconds": 300})
                held[purpose] = q.query_id
            _wait_until_held(client, list(held.values()))
            yield Pool(coordinator, nodes, client, operator,
                       hub.settings.auditor_token.get_secret_value(),
                       contexts[3].settings.access_token.get_secret_value(), held,
                       {c.settings.node_id: c.home for c in contexts})
        client.close()


def _wait_until_held(client: CoordinatorClient, query_ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = [o.message or "" for q in query_ids for o in client.result(q).nodes]
        if len(messages) == 4 * len(query_ids) and all(
                "awaiting_approval" in m for m in messages):
            return
        time.sleep(0.3)
    raise AssertionError(f"jobs not held: {messages}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _shot(page: Page, name: str) -> None:
    target = os.environ.get("DPN_SCREENSHOTS_DIR")
    if target:
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def _login(page: Page, url: str, token: str) -> None:
    page.goto(url)
    page.fill("#token", token)
    page.click("#login-submit")


def _chart_has_svg(page: Page, div_id: str) -> None:
    expect(page.locator(f"#{div_id} svg.main-svg").first).to_be_attached(timeout=15_000)


def test_the_dashboard_needs_a_login_and_refuses_a_wrong_token(pool: Pool, browser: Browser
                                                               ) -> None:
    page = browser.new_page()
    page.goto(f"{pool.coordinator.url}/ui/")
    assert page.url.startswith(f"{pool.coordinator.url}/ui/login")
    page.fill("#token", "w" * 43)
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("neither the operator's")
    page.close()


def test_operators_see_nodes_queries_budget_and_the_balance_with_charts(
        pool: Pool, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    _login(page, f"{pool.coordinator.url}/ui/login", pool.operator_token)
    expect(page.locator("#nodes tr")).to_have_count(5)  # header + 4 nodes
    expect(page.locator("#nodes")).to_contain_text("online")
    expect(page.locator("#queries")).to_contain_text(HELD_APPROVE)
    _chart_has_svg(page, "chart-epsilon")
    _shot(page, "coordinator-dashboard")

    page.click("a.balance-link")
    expect(page.locator("h1")).to_contain_text("cobalt balance 2024")
    expect(page.locator("#balance-table")).to_contain_text("COD")
    for chart in ("chart-balance", "chart-concentration"):
        _chart_has_svg(page, chart)
    expect(page.locator("#prices-forecasts")).to_contain_text("no forecast")
    _shot(page, "coordinator-balance")
    page.close()


def test_auditors_see_receipts_and_verify_a_ledger_in_the_browser(pool: Pool,
                                                                  browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    _login(page, f"{pool.coordinator.url}/ui/login?next=/ui/audit", pool.auditor_token)
    page.goto(f"{pool.coordinator.url}/ui/audit")
    expect(page.locator("header .who")).to_contain_text("auditor")
    expect(page.locator("#receipts")).to_contain_text("miner-3")
    expect(page.locator("#audit-queries")).to_contain_text("miner-3")
    context = node.open_node(pool.homes["miner-0"])
    export = node.export_ledger(context=context)
    context.engine.dispose()
    assert export.entries, "the balance left no ledger entry"
    page.fill("#ledger-json", export.model_dump_json())
    page.click("#verify-form button")
    expect(page.locator("#verification")).to_contain_text("all checks passed")
    expect(page.locator("#verification")).to_contain_text("miner-0")
    _shot(page, "coordinator-audit")
    tampered = export.model_copy(update={"entries": export.entries[1:]})
    page.fill("#ledger-json", tampered.model_dump_json())
    page.click("#verify-form button")
    expect(page.locator("#findings")).to_contain_text("missing_entry")
    page.close()


def test_the_node_owner_approves_and_denies_held_jobs(pool: Pool, browser: Browser) -> None:
    url = pool.nodes["miner-3"].url
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(f"{url}/admin/")
    assert page.url.endswith("/admin/login")
    _login(page, f"{url}/admin/login", pool.node_token)
    pending = page.locator("tr.pending-job")
    expect(pending).to_have_count(2)
    expect(page.locator("#pending")).to_contain_text("ε 0.8")
    expect(page.locator("#pending")).to_contain_text("count of production")
    _chart_has_svg(page, f"gauge-{time.gmtime().tm_year}")
    expect(page.locator("#ingest")).to_contain_text("fixture")
    _shot(page, "node-admin")

    pending.filter(has_text=HELD_APPROVE).locator("button.approve").click()
    expect(page.locator("#flash-done")).to_contain_text("approved job")
    expect(pending).to_have_count(1)
    row = pending.filter(has_text=HELD_DENY)
    row.locator("input[name=reason]").fill("not in our data-sharing agreement")
    row.locator("button.deny").click()
    expect(page.locator("#flash-done")).to_contain_text("denied job")
    expect(page.locator("#no-pending")).to_be_visible()
    expect(page.locator("#history")).to_contain_text("not in our data-sharing agreement")
    page.close()

    outcome = {o.node_id: o for o in pool.client.result(pool.held[HELD_DENY]).nodes}
    deadline = time.monotonic() + 30
    while outcome["miner-3"].status != "refused" and time.monotonic() < deadline:
        time.sleep(0.3)
        outcome = {o.node_id: o for o in pool.client.result(pool.held[HELD_DENY]).nodes}
    assert outcome["miner-3"].status == "refused"
    assert "not in our data-sharing agreement" in (outcome["miner-3"].message or "")
    approved = {o.node_id: o for o in pool.client.result(pool.held[HELD_APPROVE]).nodes}
    while approved["miner-3"].status != "answered" and time.monotonic() < deadline:
        time.sleep(0.3)
        approved = {o.node_id: o for o in pool.client.result(pool.held[HELD_APPROVE]).nodes}
    assert approved["miner-3"].status == "answered"


def test_state_changes_need_the_session_csrf_token(pool: Pool) -> None:
    url = pool.nodes["miner-3"].url
    with httpx.Client(base_url=url) as http:
        assert http.post("/admin/jobs/x/approve", data={"csrf": "x"}).status_code == 303
        assert http.post("/admin/login", data={"token": pool.node_token}).status_code == 303
        cookie = http.cookies.get("dpn_node_session")
        assert cookie
        forged = http.post("/admin/jobs/x/approve", data={"csrf": "forged"})
        assert forged.status_code == 403
        set_cookie = http.post("/admin/login", data={"token": pool.node_token}).headers[
            "set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
