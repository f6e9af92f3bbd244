"""The coordinator's HTTP API: operator token, precise errors, query history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator import (
    CoordinatorConfigError,
    create_app,
    create_schema,
    init_settings,
    make_engine,
)
from coordinator._settings import load_settings
from tests.unit.coordinator.conftest import query


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = init_settings(home=tmp_path / "coord", port=8799)
    engine = make_engine(settings.database_url)
    create_schema(engine=engine)
    token = settings.operator_token.get_secret_value()
    yield TestClient(create_app(settings=settings, engine=engine)), {
        "Authorization": f"Bearer {token}"}
    engine.dispose()


def test_every_operator_route_needs_the_token(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = api
    assert client.get("/v1/health").status_code == 200
    for method, path in (("GET", "/v1/nodes"), ("POST", "/v1/queries"),
                         ("POST", "/v1/balances"), ("GET", "/v1/queries/abc")):
        response = client.request(method, path, json={})
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"


def test_enrolling_an_unreachable_node_says_where_and_why(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, auth = api
    response = client.post("/v1/nodes", headers=auth, json={
        "url": "http://127.0.0.1:9", "access_token": "a" * 40})
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "enrolment_failed"
    assert "http://127.0.0.1:9/v1/info" in body["message"]


def test_a_query_with_no_enrolled_node_fails_and_is_kept_in_history(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, auth = api
    q = query()
    response = client.post("/v1/queries", headers=auth, json=q.model_dump(mode="json"))
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    stored = client.get(f"/v1/queries/{q.query_id}", headers=auth)
    assert stored.status_code == 200
    assert stored.json()["query"]["query_id"] == q.query_id
    missing = client.get(f"/v1/queries/{'0' * 32}", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_query"


def test_settings_refuse_a_default_operator_token(tmp_path: Path) -> None:
    home = tmp_path / "c"
    home.mkdir()
    (home / "coordinator.toml").write_text(
        'database_url = "sqlite://"\noperator_token = "changeme"\n')
    with pytest.raises(CoordinatorConfigError, match="operator_token is a default or too short"):
        load_settings(home)
