"""The web pages in-process (no browser): sign-in, redirects, loopback-only admin, CSRF."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

import node
from coordinator import create_app, init_coordinator


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
        assert "ledger verification arrives with the ledger feature" in audit.text
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
