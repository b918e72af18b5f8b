"""Named tokens with roles guard the admin API: every route, on SQLite and PostgreSQL, through the real app."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from tests.api.conftest import AUTH

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
PATH_VALUES = {"name": "m", "version": "1", "alias": "staging"}
# Whatever a route's body looks like, it gets one: a guard must answer before the body is judged.
ANY_BODY = {"name": "x", "runtime": "echo", "version": 1, "role": "admin"}


def served_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, however deeply its routers are nested."""
    try:
        from fastapi.routing import iter_route_contexts
        routes = list(iter_route_contexts(app.routes))
    except ImportError:  # before FastAPI 0.137, included routes were copied into app.routes
        routes = list(app.routes)
    return sorted({(method, route.path) for route in routes for method in (getattr(route, "methods", None) or ())
                   if getattr(route, "path", None) and method != "HEAD"})


APP_ROUTES = served_routes(create_app(Settings(data_dir=Path("unused"))))
ADMIN_ROUTES = [(m, p) for m, p in APP_ROUTES if p.startswith("/admin")]
CHANGING_ROUTES = [(m, p) for m, p in ADMIN_ROUTES if m not in READ_METHODS]
READER_ROUTES = [(m, p) for m, p in ADMIN_ROUTES if m in READ_METHODS and not p.startswith("/admin/tokens")]


def route_id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_token(client: TestClient, name: str, role: str, headers: dict[str, str] = AUTH) -> str:
    response = client.post("/admin/tokens", json={"name": name, "role": role}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def snapshot(client: TestClient) -> object:
    """Everything an admin can see: models with versions and history, and the tokens."""
    models = client.get("/admin/models", headers=AUTH).json()
    return ([(m, client.get(f"/admin/models/{m['name']}/versions", headers=AUTH).json(),
              client.get(f"/admin/models/{m['name']}/history", headers=AUTH).json()) for m in models],
            client.get("/admin/tokens", headers=AUTH).json())


# The route matrices run on SQLite only: which token a route takes does not depend on the database,
# and the token tests below (hashes, revocation, history) run on both.
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def served(client: TestClient, make_model: Callable[..., list[int]]) -> TestClient:
    """A model ``m`` with version 1 in production and alias ``staging`` on it, so every route has a target."""
    make_model("m", 1.0)
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    assert client.put("/admin/models/m/aliases/staging", json={"version": 1}, headers=AUTH).status_code == 200
    return client


def test_the_route_list_holds_every_admin_route_of_the_schema() -> None:
    # The guards below iterate this list: were it to come back empty, they would pass and check nothing.
    documented = {(method.upper(), path) for path, ops in create_app(Settings(data_dir=Path("unused"))).openapi()
                  ["paths"].items() for method in ops if path.startswith("/admin")}
    assert documented and documented <= set(ADMIN_ROUTES)
    assert {("POST", "/admin/models/{name}/promote"), ("DELETE", "/admin/tokens/{name}")} <= set(CHANGING_ROUTES)


@ON_SQLITE
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES, ids=map(route_id, ADMIN_ROUTES))
def test_every_admin_route_refuses_missing_wrong_and_revoked_tokens(served: TestClient, method: str,
                                                                    path: str) -> None:
    revoked = make_token(served, "gone", "admin")
    assert served.delete("/admin/tokens/gone", headers=AUTH).status_code == 200
    before = snapshot(served)
    for headers in ({}, bearer("wrong"), bearer(revoked), {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        response = served.request(method, concrete(path), headers=headers, json=ANY_BODY)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"]
    assert snapshot(served) == before


@ON_SQLITE
@pytest.mark.parametrize(("method", "path"), CHANGING_ROUTES, ids=map(route_id, CHANGING_ROUTES))
def test_every_admin_route_that_changes_something_refuses_reader_tokens(served: TestClient, method: str,
                                                                        path: str) -> None:
    reader = make_token(served, "viewer", "reader")
    before = snapshot(served)
    response = served.request(method, concrete(path), headers=bearer(reader), json=ANY_BODY)
    assert response.status_code == 403, response.text
    assert response.json()["detail"] == "this needs a token with role 'admin'; token 'viewer' has role 'reader'"
    assert snapshot(served) == before


@ON_SQLITE
@pytest.mark.parametrize(("method", "path"), READER_ROUTES, ids=map(route_id, READER_ROUTES))
def test_a_reader_token_reads_models_versions_history_and_plugins(served: TestClient, method: str,
                                                                  path: str) -> None:
    response = served.request(method, concrete(path), headers=bearer(make_token(served, "viewer", "reader")))
    assert response.status_code == 200, response.text


def test_only_admins_see_the_tokens(served: TestClient) -> None:
    reader = make_token(served, "viewer", "reader")
    refused = served.get("/admin/tokens", headers=bearer(reader))
    assert refused.status_code == 403 and "role 'admin'" in refused.json()["detail"]
    assert [t["name"] for t in served.get("/admin/tokens", headers=bearer(make_token(served, "ops", "admin"))).json()] \
        == ["ops", "viewer"]


def test_tokens_are_stored_only_as_hashes(client: TestClient, database_url: str) -> None:
    created = client.post("/admin/tokens", json={"name": "ci-bot", "role": "admin"}, headers=AUTH)
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    secret = created.json()["token"]
    assert secret.startswith("mrt_") and len(secret) > 40
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    engine.dispose()
    assert len(rows) == 1 and rows[0]["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in str(value) for value in rows[0].values())
    listed = client.get("/admin/tokens", headers=AUTH)
    assert secret not in listed.text and rows[0]["hash"] not in listed.text
    assert listed.json() == [{"name": "ci-bot", "role": "admin", "created_at": created.json()["created_at"],
                              "created_by": "bootstrap", "revoked_at": None, "revoked_by": None, "active": True}]


def test_a_revoked_token_stops_working_at_once(client: TestClient) -> None:
    secret = make_token(client, "ci-bot", "admin")
    assert client.get("/admin/models", headers=bearer(secret)).status_code == 200
    revoked = client.delete("/admin/tokens/ci-bot", headers=bearer(secret))  # a token may revoke itself
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert revoked.json()["revoked_by"] == "ci-bot"
    refused = client.get("/admin/models", headers=bearer(secret))
    assert refused.status_code == 401 and refused.json()["detail"] == "invalid or revoked token"
    again = client.delete("/admin/tokens/ci-bot", headers=AUTH)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    missing = client.delete("/admin/tokens/ghost", headers=AUTH)
    assert missing.status_code == 404 and "token 'ghost' does not exist" in missing.json()["detail"]


def test_history_names_the_token_that_acted(client: TestClient) -> None:
    ci = bearer(make_token(client, "ci-bot", "admin"))
    assert client.post("/admin/models", json={"name": "m", "runtime": "echo"}, headers=ci).status_code == 201
    files = {"artifact": ("m.json", b'{"offset": 1.0}', "application/octet-stream")}
    version = client.post("/admin/models/m/versions", files=files, headers=ci)
    assert version.status_code == 201 and version.json()["created_by"] == "ci-bot"
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    history = client.get("/admin/models/m/history", headers=bearer(make_token(client, "viewer", "reader"))).json()
    assert [(h["action"], h["actor"]) for h in history] == [("create", "ci-bot"), ("promote", "bootstrap")]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"name": "ci-bot", "role": "admin"}, 409, "a token named 'ci-bot' already exists"),
    ({"name": "old", "role": "reader"}, 409, "a token named 'old' already exists"),
    ({"name": "bootstrap", "role": "admin"}, 422, "reserved for MODELREG_ADMIN_TOKEN"),
    ({"name": "a b", "role": "admin"}, 422, "invalid token name 'a b'"),
    ({"name": "x" * 65, "role": "admin"}, 422, "invalid token name"),
    ({"name": "x", "role": "root"}, 422, "role"),
    ({"name": "x", "role": "admin", "scopes": []}, 422, "scopes"),
])
def test_bad_token_requests_get_a_clear_error_and_change_nothing(client: TestClient, body: dict[str, object],
                                                                 status: int, message: str) -> None:
    make_token(client, "ci-bot", "admin")
    make_token(client, "old", "reader")
    assert client.delete("/admin/tokens/old", headers=AUTH).status_code == 200
    before = snapshot(client)
    response = client.post("/admin/tokens", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert snapshot(client) == before


def test_a_reader_token_cannot_make_itself_an_admin(client: TestClient) -> None:
    reader = bearer(make_token(client, "viewer", "reader"))
    refused = client.post("/admin/tokens", json={"name": "escalated", "role": "admin"}, headers=reader)
    assert refused.status_code == 403
    assert [t["name"] for t in client.get("/admin/tokens", headers=AUTH).json()] == ["viewer"]
