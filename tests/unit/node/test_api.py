"""The node's HTTP API: public info, authenticated releases, precise error bodies."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

import node
from protocols import SignedAnswer, verify
from tests.unit.node.conftest import cobalt_query, insert_records, make_record


def client_for(context: node.NodeContext) -> tuple[TestClient, dict[str, str]]:
    token = context.settings.access_token.get_secret_value()
    return TestClient(node.create_app(context)), {"Authorization": f"Bearer {token}"}


def test_info_is_public_and_states_the_key(make_node: Callable[..., node.NodeContext]) -> None:
    context = make_node()
    client, _ = client_for(context)
    info = client.get("/v1/info").json()
    assert info["node_id"] == "acme"
    assert info["public_key"] == context.public_key
    assert info["key_id"] == context.key_id


def test_queries_need_the_coordinators_token(make_node: Callable[..., node.NodeContext]) -> None:
    client, _ = client_for(make_node())
    body = cobalt_query().model_dump(mode="json")
    for headers in ({}, {"Authorization": "Bearer " + "x" * 43}):
        response = client.post("/v1/queries", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


def test_a_query_returns_a_verifiable_signed_answer(
    make_node: Callable[..., node.NodeContext],
) -> None:
    context = make_node()
    insert_records(context, [make_record("a")])
    client, auth = client_for(context)
    response = client.post("/v1/queries", json=cobalt_query().model_dump(mode="json"),
                           headers=auth)
    assert response.status_code == 200
    signed = SignedAnswer.model_validate(response.json())
    verify(context.public_key, signed.answer.model_dump(mode="json"), signed.signature)
    budget = client.get("/v1/budget", headers=auth).json()
    assert budget == [{"year": 2024, "total": 10.0, "spent": 1.0, "remaining": 9.0}]


def test_budget_refusal_states_requested_and_remaining(
    make_node: Callable[..., node.NodeContext],
) -> None:
    client, auth = client_for(make_node(epsilon_per_year=1.5))
    assert client.post("/v1/queries", json=cobalt_query().model_dump(mode="json"),
                       headers=auth).status_code == 200
    response = client.post("/v1/queries", json=cobalt_query().model_dump(mode="json"),
                           headers=auth)
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "budget_exceeded"
    assert body["detail"] == {"requested": 1.0, "remaining": {"2024": 0.5}}


def test_policy_refusal_names_the_rule(make_node: Callable[..., node.NodeContext]) -> None:
    client, auth = client_for(make_node(max_epsilon_per_release=0.5))
    response = client.post("/v1/queries", json=cobalt_query().model_dump(mode="json"),
                           headers=auth)
    assert response.status_code == 403
    assert response.json()["error"] == "query_refused"
    assert response.json()["detail"] == {"rule": "max_epsilon_per_release"}


def test_an_invalid_query_lists_each_bad_field(make_node: Callable[..., node.NodeContext]) -> None:
    client, auth = client_for(make_node())
    body = cobalt_query().model_dump(mode="json")
    body["epsilon"] = -1
    body["commodities"] = ["unobtainium"]
    response = client.post("/v1/queries", json=body, headers=auth)
    assert response.status_code == 422
    fields = {p["field"] for p in response.json()["detail"]["problems"]}
    assert {"body.epsilon", "body.commodities.0"} <= fields


def _paths(app: object) -> set[str]:
    paths: set[str] = set()
    for route in app.routes:  # type: ignore[attr-defined]
        inner = getattr(route, "original_router", None)
        if inner is not None:
            paths |= {r.path for r in inner.routes}
        else:
            paths.add(route.path)
    return paths


def test_no_route_serves_records(make_node: Callable[..., node.NodeContext]) -> None:
    paths = _paths(node.create_app(make_node()))
    assert {p for p in paths if p.startswith("/v1")} == {
        "/v1/health", "/v1/ready", "/v1/info", "/v1/queries", "/v1/budget"}
    # the local admin pages show jobs, budget and imports, never records
    assert all("record" not in p for p in paths)
