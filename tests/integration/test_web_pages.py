"""The web pages in-process (no browser): sign-in, redirects, loopback-only admin, CSRF."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

import node
from coordinator import create_app, init_coordinator
from tests.unit.node.conftest import COVERAGE, SIMPLE_MAPPING, cobalt_query


def test_the_dashboard_signs_in_with_a_role_token_and_never_redirects_off_site(
        tmp_path: Path) -> None:
    context = init_coordinator(home=tmp_path / "pool", port=8798)
    with TestClient(create_app(context), follow_redirects=False) as http:
        assert http.get("/ui/").headers["location"] == "/ui/login?next=/ui/"
        refused = http.post("/ui/login", data={"token": "x" * 43})
        assert refused.status_code == 401 and "neither the operator" in refused.text
        signed_in = http.post("/ui/login", data={
            "token": context.settings.auditor_token.get_secret_value(),
            "next": "//evil.example/"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ui/"
        overview = http.get("/ui/")
        assert overview.status_code == 200
        assert "No node is enrolled yet" in overview.text and "auditor" in overview.text
        assert "default-src 'self'" in overview.headers["content-security-policy"]
        audit = http.get("/ui/audit")
        assert "no receipt yet" in audit.text and 'id="verify-form"' in audit.text
        assert http.get("/ui/balances/cobalt/2024").status_code == 404
        script = http.get("/ui/static/plotly.min.js")
        assert script.status_code == 200 and len(script.content) > 1_000_000
        assert http.post("/ui/logout", data={"csrf": "forged"}).status_code == 403
    context.engine.dispose()


def test_the_node_admin_page_answers_loopback_clients_only(tmp_path: Path) -> None:
    context = node.init_node(home=tmp_path / "n", node_id="acme", display_name="Acme")
    token = context.settings.access_token.get_secret_value()
    app = node.create_app(context, run_agent=False)
    with TestClient(app, follow_redirects=False) as remote:  # client host "testclient"
        assert remote.get("/admin/login").status_code == 403
        assert remote.post("/admin/login", data={"token": token}).status_code == 403
    with TestClient(app, follow_redirects=False, client=("127.0.0.1", 50000)) as local:
        assert local.get("/admin/").headers["location"] == "/admin/login"
        assert local.post("/admin/login", data={"token": "y" * 43}).status_code == 401
        assert local.post("/admin/login", data={"token": token}).status_code == 303
        page = local.get("/admin/")
        assert page.status_code == 200 and "No job is waiting for approval" in page.text
        assert local.post("/admin/jobs/nope/approve", data={"csrf": "x"}).status_code == 403
    context.engine.dispose()




def test_the_node_admin_page_shows_every_ingest_attempt_with_its_problems(
        tmp_path: Path) -> None:
    context = node.init_node(home=tmp_path / "n", node_id="acme", display_name="Acme")
    token = context.settings.access_token.get_secret_value()
    (tmp_path / "map.toml").write_text(SIMPLE_MAPPING, encoding="utf-8")
    mapping = node.load_mapping(tmp_path / "map.toml")
    header = "id,month,commodity,flow,country,qty,unit\n"
    good = tmp_path / "good.csv"
    good.write_text(header + "A1,2024-01,cobalt,production,COD,5,t\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "B1,2024-01,cobalt,production,COD,<b>lots</b>,t\n"
                   "B2,2024-01,cobalt,production,COD,-3,t\n", encoding="utf-8")
    node.ingest_file(engine=context.engine, path=good, mapping=mapping)
    try:
        node.ingest_file(engine=context.engine, path=bad, mapping=mapping)
    except node.IngestError:
        pass
    else:
        raise AssertionError("bad.csv was imported")
    app = node.create_app(context, run_agent=False)
    with TestClient(app, follow_redirects=False, client=("127.0.0.1", 50000)) as local:
        assert local.post("/admin/login", data={"token": token}).status_code == 303
        page = local.get("/admin/").text
    attempts = page[page.index('id="ingest-attempts"'):page.index("Imported files")]
    assert attempts.index('data-outcome="rejected"') < attempts.index('data-outcome="imported"')
    assert attempts.count('class="ingest-error"') == 2
    assert "bad.csv" in attempts and "good.csv" in attempts
    assert "&#39;&lt;b&gt;lots&lt;/b&gt;&#39; is not a number" in attempts  # escaped
    assert "<b>lots" not in page
    assert "quantity -3.0 is negative" in attempts
    context.engine.dispose()


def test_the_audit_page_verifies_a_pasted_ledger_and_needs_the_csrf_token(
        tmp_path: Path) -> None:
    import re

    from protocols import (
        InMemoryLedger,
        LedgerExport,
        PrivacyCost,
        generate_private_key,
        key_id,
        public_key_b64,
    )

    context = init_coordinator(home=tmp_path / "pool", port=8797)
    key = generate_private_key()
    ledger = InMemoryLedger(key, "acme", key_id(public_key_b64(key)))
    for i in range(3):
        ledger.record(query_id=f"{i:032x}", payload={"i": i}, cost=PrivacyCost(epsilon=0.5),
                      accounting_periods=[2024],
                      recorded_at=datetime(2026, 1, 1, tzinfo=UTC))
    export = LedgerExport(node_id="acme", exported_at=datetime(2026, 1, 2, tzinfo=UTC),
                          public_keys={ledger.key_id: public_key_b64(key)},
                          entries=ledger.entries[:1] + ledger.entries[2:])  # entry 2 removed
    with TestClient(create_app(context), follow_redirects=False) as http:
        http.post("/ui/login", data={"token": context.settings.auditor_token.get_secret_value()})
        page = http.get("/ui/audit").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        forged = http.post("/ui/audit/verify", data={"csrf": "forged",
                                                     "ledger": export.model_dump_json()})
        assert forged.status_code == 403 and "CSRF" in forged.text
        garbage = http.post("/ui/audit/verify", data={"csrf": csrf.group(1), "ledger": "{}"})
        assert garbage.status_code == 422 and "not a ledger export" in garbage.text
        shown = http.post("/ui/audit/verify", data={"csrf": csrf.group(1),
                                                    "ledger": export.model_dump_json()})
    assert shown.status_code == 200
    findings = shown.text[shown.text.index('id="findings"'):]
    assert "sequence_break" in findings and "chain_break" in findings
    # the receipts were never delivered to this coordinator: each entry is unreceipted
    assert findings.count("unreceipted_entry") == 2
    context.engine.dispose()


def test_the_node_admin_page_lists_the_ledger(tmp_path: Path) -> None:
    context = node.init_node(home=tmp_path / "n", node_id="acme", display_name="Acme",
                             policy=node.Policy(coverage=COVERAGE))
    for purpose in ("first balance", "second balance"):
        node.answer_query(context=context, query=cobalt_query(purpose=purpose, epsilon=0.5))
    token = context.settings.access_token.get_secret_value()
    with TestClient(node.create_app(context, run_agent=False), follow_redirects=False,
                    client=("127.0.0.1", 50000)) as local:
        assert local.post("/admin/login", data={"token": token}).status_code == 303
        page = local.get("/admin/").text
    section = page[page.index('id="ledger"'):page.index('id="history"')]
    assert section.count('class="ledger-entry"') == 2
    assert section.index("second balance") < section.index("first balance")  # newest first
    assert "epsilon=0.5" in section
    context.engine.dispose()
